/*
 * tools/kbench/kbench_plot.c — `--plot FILE`: the charts come from matplotlib, through
 * tools/kbench-plot.py, which reads kbench's JSON (docs/kbench.md, "--plot"). kbench runs
 * it beside its own executable (build/tools/ or the install's bindir), with the python
 * meson found matplotlib in, by posix_spawn: no shell, so no file name needs quoting.
 */
#include "kbench.h"

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* path = kbench's own directory / name: the programs built and installed beside it. */
int kb_beside_self(const char *name, char *path, size_t pathn, char *err, size_t errn) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) KB_FAIL("cannot find kbench's own directory (/proc/self/exe): %s", strerror(errno));
    self[n] = '\0';
    *strrchr(self, '/') = '\0';
    snprintf(path, pathn, "%s/%s", self, name);
    return 0;
}

int kb_plot(const char *json_path, const char *out, char *err, size_t errn) {
    char script[PATH_MAX + 16];
    if (!KBENCH_PYTHON[0])
        KB_FAIL("plots need python3 with matplotlib, and none was found when kbench was built (Debian: apt-get "
                "install python3-matplotlib, or bash ci/setup; then rebuild)");
    if (kb_beside_self("kbench-plot", script, sizeof script, err, errn) != 0) return -1;
    if (access(script, R_OK) != 0)
        KB_FAIL("%s: %s (it is built and installed beside kbench)", script, strerror(errno));
    char *argv[] = {(char *)KBENCH_PYTHON, script, (char *)json_path, "--out", (char *)out, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, KBENCH_PYTHON, NULL, NULL, argv, environ), status = 0;
    if (rc != 0) KB_FAIL("cannot run %s: %s", KBENCH_PYTHON, strerror(rc));
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        KB_FAIL("kbench-plot failed (%s %d); its message is above", WIFEXITED(status) ? "exit" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    return 0;
}
