/*
 * backends/cuda/cuda_fatbin.c — reads nvcc fatbins and the CUDA ELF images in them
 * (layout: cuda_fatbin.h). Every offset is bounds-checked against the buffer given:
 * the input is our own build output, but a reader that trusts lengths is how a bad
 * file becomes a crash.
 */
#include "cuda_fatbin.h"

#include <elf.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FB_HEADER_SIZE 16u
#define FB_ENTRY_MIN 64u
#define FB_FLAG_COMPRESSED_LZ4 0x2000u
#define FB_FLAG_COMPRESSED_ZSTD 0x8000u
#define FB_FLAG_ARCH_SPECIFIC 0x100000u

static void fb_err(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fb_err(char *err, size_t len, const char *fmt, ...) {
    if (!err || len == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* Unaligned little-endian loads (the host is little-endian: x86-64, aarch64). */
static uint16_t rd16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

int kp_cu_fatbin_images(const void *data, size_t size, kp_cu_fb_image *out, int max, char *err,
                        size_t err_len) {
    const unsigned char *b = data;
    if (!b || size < FB_HEADER_SIZE) {
        fb_err(err, err_len, "fatbin of %zu bytes is shorter than its 16-byte header", size);
        return -1;
    }
    if (rd32(b) != KP_CU_FATBIN_MAGIC) {
        fb_err(err, err_len, "not a fatbin: magic 0x%08x, expected 0x%08x", rd32(b), KP_CU_FATBIN_MAGIC);
        return -1;
    }
    const uint16_t header = rd16(b + 6);
    const uint64_t body = rd64(b + 8);
    if (header < FB_HEADER_SIZE || header > size || body > size - header) {
        fb_err(err, err_len, "fatbin header claims %u + %llu bytes; %zu given", header,
               (unsigned long long)body, size);
        return -1;
    }
    const size_t end = header + (size_t)body;
    size_t pos = header;
    int n = 0;
    while (pos < end) {
        if (end - pos < FB_ENTRY_MIN) {
            fb_err(err, err_len, "fatbin entry %d at offset %zu: %zu bytes left, an entry header needs %u", n,
                   pos, end - pos, FB_ENTRY_MIN);
            return -1;
        }
        const unsigned char *e = b + pos;
        const uint32_t ehs = rd32(e + 4);
        const uint64_t padded = rd64(e + 8);
        if (ehs < FB_ENTRY_MIN || ehs > end - pos || padded > end - pos - ehs) {
            fb_err(err, err_len, "fatbin entry %d at offset %zu: header %u + payload %llu bytes overrun the %zu-byte container",
                   n, pos, ehs, (unsigned long long)padded, end);
            return -1;
        }
        const uint32_t csize = rd32(e + 16);
        const uint64_t flags = rd64(e + 40);
        if (n < max && out) {
            kp_cu_fb_image *img = &out[n];
            memset(img, 0, sizeof *img);
            img->kind = rd16(e);
            img->arch = (int)rd32(e + 28);
            img->flags = flags;
            img->arch_specific = (flags & FB_FLAG_ARCH_SPECIFIC) != 0;
            img->compressed = (flags & (FB_FLAG_COMPRESSED_LZ4 | FB_FLAG_COMPRESSED_ZSTD)) != 0 || csize != 0;
            img->data = e + ehs;
            /* the payload is padded to 8 bytes; a compressed one says its real size */
            img->size = img->compressed && csize != 0 && csize <= padded ? csize : (size_t)padded;
        }
        n++;
        pos += ehs + (size_t)padded;
    }
    return n;
}

const char *kp_cu_fb_image_name(const kp_cu_fb_image *img, char *buf, size_t len) {
    const char *prefix = img->kind == KP_CU_FB_PTX ? "compute_" : img->kind == KP_CU_FB_ELF ? "sm_" : "kind?_";
    snprintf(buf, len, "%s%d%s", prefix, img->arch, img->arch_specific ? "a" : "");
    return buf;
}

const char *kp_cu_fatbin_describe(const void *data, size_t size, char *buf, size_t len) {
    enum { MAX = 32 };
    kp_cu_fb_image imgs[MAX];
    char err[160];
    int n = kp_cu_fatbin_images(data, size, imgs, MAX, err, sizeof err);
    if (n < 0) {
        snprintf(buf, len, "unreadable fatbin (%s)", err);
        return buf;
    }
    if (n > MAX) n = MAX;
    char sass[256] = "", ptx[256] = "", name[32];
    for (int i = 0; i < n; i++) {
        char *dst = imgs[i].kind == KP_CU_FB_PTX ? ptx : sass;
        size_t used = strlen(dst);
        snprintf(dst + used, sizeof sass - used, "%s%s", used ? ", " : "", kp_cu_fb_image_name(&imgs[i], name, sizeof name));
    }
    if (sass[0] && ptx[0])
        snprintf(buf, len, "%s SASS and %s PTX", sass, ptx);
    else if (sass[0])
        snprintf(buf, len, "%s SASS, no PTX", sass);
    else if (ptx[0])
        snprintf(buf, len, "%s PTX only", ptx);
    else
        snprintf(buf, len, "an empty fatbin");
    return buf;
}

/* ------------------------------------------------------------------------ */
/* ELF                                                                       */
/* ------------------------------------------------------------------------ */

/* A section header, bounds-checked; NULL when out of range. */
static const Elf64_Shdr *elf_section(const unsigned char *elf, size_t size, const Elf64_Ehdr *eh, unsigned i) {
    if (i >= eh->e_shnum) return NULL;
    const unsigned char *p = elf + eh->e_shoff + (size_t)i * eh->e_shentsize;
    (void)size; /* the whole table was checked by the caller */
    return (const Elf64_Shdr *)(const void *)p;
}

/* A NUL-terminated name at strtab[off], or NULL. */
static const char *elf_str(const unsigned char *elf, size_t size, const Elf64_Shdr *strtab, uint64_t off) {
    if (!strtab || strtab->sh_offset > size || strtab->sh_size > size - strtab->sh_offset || off >= strtab->sh_size)
        return NULL;
    const char *s = (const char *)elf + strtab->sh_offset + off;
    return memchr(s, '\0', strtab->sh_size - off) ? s : NULL;
}

int kp_cu_elf_kernels(const unsigned char *elf, size_t size, kp_cu_elf_kernel_fn fn, void *user, char *err,
                      size_t err_len) {
    Elf64_Ehdr ehc; /* copied: the payload is only 8-byte aligned within the fatbin */
    if (!elf || size < sizeof ehc) {
        fb_err(err, err_len, "ELF image of %zu bytes is too short", size);
        return -1;
    }
    memcpy(&ehc, elf, sizeof ehc);
    const Elf64_Ehdr *eh = &ehc;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_ident[EI_DATA] != ELFDATA2LSB) {
        fb_err(err, err_len, "not a little-endian ELF64 image (compressed?)");
        return -1;
    }
    if (eh->e_machine != EM_CUDA) {
        fb_err(err, err_len, "ELF machine %u is not EM_CUDA (%u)", eh->e_machine, EM_CUDA);
        return -1;
    }
    if (eh->e_shentsize != sizeof(Elf64_Shdr) || eh->e_shoff > size ||
        (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > size - eh->e_shoff || ((uintptr_t)(elf + eh->e_shoff) & 7)) {
        fb_err(err, err_len, "ELF section table (%u entries at %llu) is outside the %zu-byte image or misaligned",
               eh->e_shnum, (unsigned long long)eh->e_shoff, size);
        return -1;
    }
    const Elf64_Shdr *shstr = elf_section(elf, size, eh, eh->e_shstrndx);
    int count = 0, symtabs = 0;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        const Elf64_Shdr *sh = elf_section(elf, size, eh, i);
        if (sh->sh_type != SHT_SYMTAB) continue;
        symtabs++;
        const Elf64_Shdr *strs = elf_section(elf, size, eh, sh->sh_link);
        if (sh->sh_offset > size || sh->sh_size > size - sh->sh_offset || sh->sh_entsize != sizeof(Elf64_Sym) ||
            !strs) {
            fb_err(err, err_len, "ELF .symtab (section %u) is malformed", i);
            return -1;
        }
        const size_t nsym = sh->sh_size / sizeof(Elf64_Sym);
        for (size_t k = 0; k < nsym; k++) {
            Elf64_Sym sym;
            memcpy(&sym, elf + sh->sh_offset + k * sizeof sym, sizeof sym);
            if (ELF64_ST_TYPE(sym.st_info) != STT_FUNC || ELF64_ST_BIND(sym.st_info) != STB_GLOBAL ||
                sym.st_shndx == SHN_UNDEF || sym.st_shndx >= eh->e_shnum)
                continue;
            const char *name = elf_str(elf, size, strs, sym.st_name);
            const char *sec = elf_str(elf, size, shstr, elf_section(elf, size, eh, sym.st_shndx)->sh_name);
            /* an entry function lives in its own .text.<name> section (device
             * functions that were not inlined are STT_FUNC too, but not global) */
            if (!name || !sec || strncmp(sec, ".text.", 6) != 0 || strcmp(sec + 6, name) != 0) continue;
            if (fn) fn(user, name);
            count++;
        }
    }
    if (symtabs == 0) {
        fb_err(err, err_len, "ELF image has no .symtab");
        return -1;
    }
    return count;
}

typedef struct elf_find {
    const char *name;
    int found;
} elf_find;

static void elf_find_fn(void *user, const char *name) {
    elf_find *f = user;
    if (strcmp(name, f->name) == 0) f->found = 1;
}

int kp_cu_elf_has_kernel(const unsigned char *elf, size_t size, const char *name) {
    elf_find f = {.name = name, .found = 0};
    if (kp_cu_elf_kernels(elf, size, elf_find_fn, &f, NULL, 0) < 0) return -1;
    return f.found;
}

const kp_cu_fb_image *kp_cu_fatbin_pick(const kp_cu_fb_image *imgs, int n, int cc) {
    const kp_cu_fb_image *sass = NULL, *ptx = NULL;
    for (int i = 0; i < n; i++) {
        const kp_cu_fb_image *img = &imgs[i];
        if (img->arch > cc || (img->arch_specific && img->arch != cc)) continue;
        if (img->kind == KP_CU_FB_ELF && img->arch / 10 == cc / 10) {
            if (!sass || img->arch > sass->arch || (img->arch == sass->arch && img->arch_specific)) sass = img;
        } else if (img->kind == KP_CU_FB_PTX) {
            if (!ptx || img->arch > ptx->arch) ptx = img;
        }
    }
    return sass ? sass : ptx;
}
