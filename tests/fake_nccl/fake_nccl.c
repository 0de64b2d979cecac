/*
 * tests/fake_nccl/fake_nccl.c — a small fake libnccl.so.2 for the NCCL transport's
 * tests (tests/ep, ci/ep-test): the few calls kport's transport uses plus what a test
 * needs to make a communicator, over POSIX shared memory among the processes of one
 * mpirun on one machine. Buffers are host memory (kport's cpu backend, whose device
 * addresses are host pointers); streams are ignored and every group completes inside
 * ncclGroupEnd.
 *
 * Shared memory: one segment per communicator (named by the unique id), a header and
 * one mailbox per ordered rank pair (src -> dst). A mailbox carries one chunk at a time:
 * the sender writes it when ready == ack and then sets ready = ack + 1; the receiver
 * copies it when ready > ack and then sets ack = ready. A group's sends and receives
 * progress together in one loop, so any pairing of sends and receives completes. A
 * group that makes no progress for KPORT_FAKE_NCCL_TIMEOUT_MS (default 30000) returns
 * ncclSystemError, so a missing peer never hangs a test.
 *
 * KPORT_FAKE_NCCL_NONBLOCKING=1 (read at each ncclGroupEnd) acts as a non-blocking
 * communicator does: ncclGroupEnd returns ncclInProgress with the group in flight, and
 * ncclCommGetAsyncError moves it on, answering ncclInProgress until it has finished
 * (then ncclSuccess) or made no progress for the timeout above (then ncclSystemError).
 * That is how tests/ep checks that kport's poll gives up on a missing peer by itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define API __attribute__((visibility("default")))
#define CHUNK (256u * 1024u)
#define MAX_RANKS 64

typedef enum { ncclSuccess = 0, ncclSystemError = 2, ncclInternalError = 3, ncclInvalidArgument = 4,
               ncclInvalidUsage = 5, ncclInProgress = 7 } ncclResult_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef enum { ncclInt8 = 0, ncclUint8 = 1 } ncclDataType_t;
typedef void *cudaStream_t;

typedef struct mailbox {
    _Atomic uint64_t ready, ack;
    uint64_t bytes;
    unsigned char data[CHUNK];
} mailbox;

typedef struct segment {
    _Atomic int32_t joined, attached;
    int32_t nranks;
    mailbox box[]; /* [src * nranks + dst] */
} segment;

typedef struct op {
    int send, peer;
    struct ncclComm *comm;
    unsigned char *buf;
    size_t bytes, done;
    int finished;
} op;

typedef struct ncclComm {
    segment *seg;
    size_t seg_bytes;
    int rank, nranks;
    op *pending; /* a non-blocking group still in flight (KPORT_FAKE_NCCL_NONBLOCKING) */
    int npending;
    double deadline;
} *ncclComm_t;

static _Thread_local op *queue;
static _Thread_local int queued, queue_cap, depth;

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static double timeout_ms(void) {
    const char *e = getenv("KPORT_FAKE_NCCL_TIMEOUT_MS");
    return e && atof(e) > 0 ? atof(e) : 30000.0;
}

API ncclResult_t ncclGetVersion(int *version) {
    if (!version) return ncclInvalidArgument;
    *version = 22300; /* 2.23.0 */
    return ncclSuccess;
}

API const char *ncclGetErrorString(ncclResult_t r) {
    switch (r) {
    case ncclSuccess: return "no error (fake)";
    case ncclSystemError: return "system error (fake: timed out or shared memory failed)";
    case ncclInternalError: return "internal error (fake)";
    case ncclInvalidArgument: return "invalid argument (fake)";
    case ncclInvalidUsage: return "invalid usage (fake)";
    case ncclInProgress: return "operation in progress (fake)";
    }
    return "unknown result (fake)";
}

API ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static _Atomic int counter;
    if (!id) return ncclInvalidArgument;
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "/kport-fake-nccl-%ld-%d", (long)getpid(), atomic_fetch_add(&counter, 1));
    return ncclSuccess;
}

API ncclResult_t ncclCommInitRank(ncclComm_t *out, int nranks, ncclUniqueId id, int rank) {
    if (!out || nranks < 1 || nranks > MAX_RANKS || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    size_t bytes = sizeof(segment) + (size_t)nranks * (size_t)nranks * sizeof(mailbox);
    int fd = shm_open(id.internal, O_CREAT | O_RDWR, 0600);
    if (fd < 0) return ncclSystemError;
    if (ftruncate(fd, (off_t)bytes) != 0) {
        close(fd);
        return ncclSystemError;
    }
    segment *seg = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (seg == MAP_FAILED) return ncclSystemError;
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) {
        munmap(seg, bytes);
        return ncclSystemError;
    }
    c->seg = seg;
    c->seg_bytes = bytes;
    c->rank = rank;
    c->nranks = nranks;
    seg->nranks = nranks; /* every rank writes the same value */
    atomic_fetch_add(&seg->joined, 1);
    const double deadline = now_ms() + timeout_ms();
    while (atomic_load(&seg->joined) < nranks)
        if (now_ms() > deadline) {
            munmap(seg, bytes);
            free(c);
            return ncclSystemError;
        } else sched_yield();
    atomic_fetch_add(&seg->attached, 1);
    if (rank == 0) { /* the name goes once everyone has mapped the segment */
        while (atomic_load(&seg->attached) < nranks && now_ms() < deadline) sched_yield();
        shm_unlink(id.internal);
    }
    *out = c;
    return ncclSuccess;
}

API ncclResult_t ncclCommDestroy(ncclComm_t c) {
    if (!c) return ncclInvalidArgument;
    free(c->pending);
    munmap(c->seg, c->seg_bytes);
    free(c);
    return ncclSuccess;
}

API ncclResult_t ncclCommCount(const ncclComm_t c, int *count) {
    if (!c || !count) return ncclInvalidArgument;
    *count = c->nranks;
    return ncclSuccess;
}

API ncclResult_t ncclCommUserRank(const ncclComm_t c, int *rank) {
    if (!c || !rank) return ncclInvalidArgument;
    *rank = c->rank;
    return ncclSuccess;
}

static _Atomic long async_error_calls;
static int progress(op *o);

/* Not NCCL: how many times ncclCommGetAsyncError was called, so that a test can tell
 * that kport took its device path (whose poll calls it; the host-staged one does not). */
API long kportFakeNcclAsyncErrorCalls(void) { return atomic_load(&async_error_calls); }

API ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *err) {
    atomic_fetch_add(&async_error_calls, 1);
    if (!c || !err) return ncclInvalidArgument;
    *err = ncclSuccess; /* a blocking group completed (or failed) inside ncclGroupEnd */
    if (!c->npending) return ncclSuccess;
    int left = 0, moved = 0;
    for (int i = 0; i < c->npending; i++)
        if (!c->pending[i].finished) {
            moved |= progress(&c->pending[i]);
            left += !c->pending[i].finished;
        }
    if (moved) c->deadline = now_ms() + timeout_ms();
    if (left && now_ms() <= c->deadline) {
        *err = ncclInProgress;
        return ncclSuccess;
    }
    *err = left ? ncclSystemError : ncclSuccess;
    c->npending = 0;
    return ncclSuccess;
}

/* One step of op o; 1 when it moved. */
static int progress(op *o) {
    mailbox *m = &o->comm->seg->box[o->send ? o->comm->rank * o->comm->nranks + o->peer
                                            : o->peer * o->comm->nranks + o->comm->rank];
    uint64_t ready = atomic_load_explicit(&m->ready, memory_order_acquire);
    uint64_t ack = atomic_load_explicit(&m->ack, memory_order_acquire);
    if (o->send) {
        if (ready != ack) return 0; /* the last chunk is not consumed yet */
        size_t n = o->bytes - o->done < CHUNK ? o->bytes - o->done : CHUNK;
        memcpy(m->data, o->buf + o->done, n);
        m->bytes = n;
        atomic_store_explicit(&m->ready, ack + 1, memory_order_release);
        o->done += n;
    } else {
        if (ready == ack) return 0;
        size_t n = (size_t)m->bytes;
        if (n > o->bytes - o->done) n = o->bytes - o->done; /* a longer send than this receive: truncated */
        memcpy(o->buf + o->done, m->data, n);
        atomic_store_explicit(&m->ack, ready, memory_order_release);
        o->done += n;
    }
    if (o->done == o->bytes) o->finished = 1; /* zero bytes: one empty chunk */
    return 1;
}

static ncclResult_t run_ops(op *ops, int n) {
    double deadline = now_ms() + timeout_ms();
    for (int left = n; left > 0;) {
        int moved = 0;
        for (int i = 0; i < n; i++)
            if (!ops[i].finished && progress(&ops[i])) {
                moved = 1;
                if (ops[i].finished) left--;
            }
        if (moved) deadline = now_ms() + timeout_ms();
        else if (now_ms() > deadline) return ncclSystemError;
        else sched_yield();
    }
    return ncclSuccess;
}

static ncclResult_t enqueue(int send, const void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t c) {
    if (!c || (type != ncclInt8 && type != ncclUint8) || peer < 0 || peer >= c->nranks || (count && !buf))
        return ncclInvalidArgument;
    op o = {.send = send, .peer = peer, .comm = c, .buf = (unsigned char *)buf, .bytes = count};
    if (depth == 0) return run_ops(&o, 1);
    if (queued == queue_cap) {
        int cap = queue_cap ? 2 * queue_cap : 16;
        op *q = realloc(queue, sizeof *q * (size_t)cap);
        if (!q) return ncclSystemError;
        queue = q;
        queue_cap = cap;
    }
    queue[queued++] = o;
    return ncclSuccess;
}

API ncclResult_t ncclSend(const void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t c,
                          cudaStream_t stream) {
    (void)stream;
    return enqueue(1, buf, count, type, peer, c);
}

API ncclResult_t ncclRecv(void *buf, size_t count, ncclDataType_t type, int peer, ncclComm_t c,
                          cudaStream_t stream) {
    (void)stream;
    return enqueue(0, buf, count, type, peer, c);
}

API ncclResult_t ncclGroupStart(void) {
    depth++;
    return ncclSuccess;
}

API ncclResult_t ncclGroupEnd(void) {
    if (depth == 0) return ncclInvalidUsage;
    if (--depth > 0) return ncclSuccess;
    const char *nb = getenv("KPORT_FAKE_NCCL_NONBLOCKING");
    ncclComm_t c = queued ? queue[0].comm : NULL;
    int one_comm = c && !c->npending;
    for (int i = 1; i < queued; i++) one_comm &= queue[i].comm == c;
    if (nb && atoi(nb) && one_comm) { /* in flight until ncclCommGetAsyncError finishes it */
        op *p = realloc(c->pending, sizeof *p * (size_t)queued);
        if (!p) return ncclSystemError;
        memcpy(p, queue, sizeof *p * (size_t)queued);
        c->pending = p;
        c->npending = queued;
        c->deadline = now_ms() + timeout_ms();
        queued = 0;
        return ncclInProgress;
    }
    ncclResult_t r = run_ops(queue, queued);
    queued = 0;
    return r;
}
