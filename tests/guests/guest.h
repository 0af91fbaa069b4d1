/*
 * What the test guest's C code may use: fixed-width types, the assembly helpers it
 * exports (the c_export thunks in testguest.S, which keep every callee-saved register),
 * and the few libc functions a freestanding build needs (runtime.c).
 *
 * C code runs in ring 3, like the assembly tests, with every page identity-mapped and
 * user-writable: a buffer's address is its guest-physical address.
 */
#ifndef VESSEL_GUEST_H
#define VESSEL_GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef unsigned long size_t;

/* COM1 output. */
void g_puts(const char *text);
void g_put_hex(u64 value);
void g_newline(void);
/* Powers off through ACPI; never returns. */
void g_power_off(void) __attribute__((noreturn));
/* Resets through the keyboard controller (0xFE to port 0x64); never returns. */
void g_reset_kbd(void) __attribute__((noreturn));

/* virtio: find the device with this PCI device id (0x1042 blk, ...; prints "VIRTIO FAIL"
 * and powers off if missing), enable the local APIC, start the device (features, queue 0,
 * MSI-X). */
void g_lapic_enable(void);
void g_virtio_find(u32 device_id);
void g_virtio_start(void);
/* The started device's configuration space (virtio-blk: capacity first). */
volatile void *g_virtio_config(void);

/* virtio-blk: one request of `type` (0 IN, 1 OUT, 4 FLUSH) at `sector` with `len` bytes
 * of `data` (the device writes them if `device_writes`); returns the status byte. */
u8 g_blk_request(u32 type, u64 sector, void *data, u32 len, u32 device_writes);
enum { BLK_IN = 0, BLK_OUT = 1, BLK_FLUSH = 4 };

/* A second virtio device at once, polled (virtio.c): v_find finds the device with this PCI
 * device id and where its structures are, v_start starts it with `queues` queues (8
 * entries each, no interrupts), v_request puts `out` and (if `in_len`) `in` on queue `q`
 * and waits until the device used them: the bytes it wrote. Failures print and power off. */
#define V_MAX_QUEUES 2
struct vqueue {
    u8 *ring;
    volatile u16 *notify;
    u16 size;
    u16 avail;
};
struct vdev {
    u32 slot;
    u32 notify_mul;
    volatile u8 *common;
    volatile u8 *notify;
    volatile u8 *config;
    struct vqueue queues[V_MAX_QUEUES];
};
void v_find(struct vdev *d, u32 device_id);
void v_start(struct vdev *d, u32 queues);
u32 v_request(struct vdev *d, u32 q, const void *out, u32 out_len, void *in, u32 in_len);

/* The CD drive by bus-master DMA (atapi_dma.c): atapi_open finds the PIIX IDE, waits for
 * the disc and returns its last block; atapi_read reads `blocks` 2048-byte blocks (1 MiB
 * at most) into a buffer it returns, valid until the next read. Both print and power off
 * on failure. */
u32 atapi_open(void);
const u8 *atapi_read(u32 lba, u16 blocks);

static inline void outb(u16 port, u8 value)
{
    __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port));
}

static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline void pause(void)
{
    __asm__ volatile("pause");
}

static inline void outl(u16 port, u32 value)
{
    __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port));
}

static inline u32 inl(u16 port)
{
    u32 v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline u64 rdtsc(void)
{
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}

/* A journal sector (test=journal, migrate, snapshot): the tick, the boot's id and the
 * checksum of every tick so far, as many whole times as 512 bytes hold. */
static inline void journal_sector(u8 *sector, u64 tick, u64 boot, u64 sum)
{
    for (int i = 0; i + 24 <= 512; i += 24) {
        *(u64 *)(sector + i) = tick;
        *(u64 *)(sector + i + 8) = boot;
        *(u64 *)(sector + i + 16) = sum;
    }
}

/* Dword `reg` of the configuration space of PCI function `bdf` (bus << 8 | device << 3 |
 * function), by configuration mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2). */
static inline u32 pci_cfg_read(u32 bdf, u32 reg)
{
    outl(0xcf8, 0x80000000u | bdf << 8 | reg);
    return inl(0xcfc);
}

static inline void pci_cfg_write(u32 bdf, u32 reg, u32 value)
{
    outl(0xcf8, 0x80000000u | bdf << 8 | reg);
    outl(0xcfc, value);
}

void *memset(void *dst, int byte, size_t len);
void *memcpy(void *dst, const void *src, size_t len);
int memcmp(const void *a, const void *b, size_t len);

/* "LABEL value\n" */
static inline void report(const char *label, u64 value)
{
    g_puts(label);
    g_put_hex(value);
    g_newline();
}

/* "LABEL w0 w1 ...\n": `label` (its own trailing space included), then `n` words in hex
 * separated by spaces (the journal, migrate and snapshot guests' tick lines). */
static inline void report_words(const char *label, const u64 *words, int n)
{
    g_puts(label);
    for (int i = 0; i < n; i++) {
        if (i)
            g_puts(" ");
        g_put_hex(words[i]);
    }
    g_newline();
}

/* The first 8 bytes of `p` as a number in disk order (as the assembly tests print). */
static inline u64 first8(const void *p)
{
    u64 v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

#endif
