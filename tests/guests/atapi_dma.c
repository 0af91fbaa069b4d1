/*
 * test=atapi-dma: the CD drive's data by bus-master DMA (SFF-8038i), moved the way Linux's
 * ata_piix moves it: the PRD table and direction first, then PACKET with the DMA feature
 * bit and the CDB, then the engine started; the command is done when the drive leaves
 * BSY and DRQ. Finds the PIIX IDE function (8086:7010) on bus 0 wherever it is (Vessel's
 * slot, QEMU's 00:01.1), turns on its bus mastering and reads BAR4.
 *
 * Prints "DMA IDE", "DMA CAPACITY <last LBA>", "DMA PVD <first 8 bytes of block 16>", then
 * reads the whole disc in 128 KiB requests (1 MiB with test=atapi-dma-1m) between
 * milestones 0x40 and 0x41, reads the status register 4096 times between 0x42 and 0x43
 * (what one register access costs), and prints
 * "DMA SUM <sum>" (the disc's bytes as little-endian u64 words, added with wrap-around),
 * "DMA BM <the bus master's error and active bits>" and "DMA DONE".
 */
#include "guest.h"

#define ATA_CMD 0x170
#define ATA_CTRL 0x376
#define BSY 0x80
#define DRQ 0x08
#define ERR 0x01
#define DEBUG_PORT 0xe9
/* The largest request: test=atapi-dma reads in 128 KiB requests (what Linux's libata asks
 * of an ATAPI drive at most), test=atapi-dma-1m in 1 MiB ones. */
#define CHUNK (1024 * 1024)
/* Status reads timed for the benchmark (benches/cd_read.rs reads the same number). */
#define STATUS_READS 4096

struct prd {
    u32 addr;
    u16 count;
    u16 flags;
};

/* The PRD table may not cross 64 KiB, nor may an entry's buffer: both aligned, one
 * entry per 64 KiB. */
static struct prd prds[CHUNK / 65536] __attribute__((aligned(64)));
static u8 buffer[CHUNK] __attribute__((aligned(65536)));
/* The secondary channel's bus-master registers. */
static u16 bm;

static void fail(const char *what, u64 value)
{
    report(what, value);
    g_power_off();
}

static u8 wait_not_busy(void)
{
    u8 status;
    while ((status = inb(ATA_CMD + 7)) & BSY)
        pause();
    return status;
}

/* Runs `cdb` with its `len` bytes of data moved by DMA into `buffer`; 0, or the error
 * register when the command failed. */
static u8 dma_packet(const u8 *cdb, u32 len)
{
    u32 entries = 0;
    do {
        u32 n = len - entries * 65536 > 65536 ? 65536 : len - entries * 65536;
        prds[entries].addr = (u32)(u64)(buffer + entries * 65536);
        prds[entries].count = (u16)n; /* 0 is 64 KiB */
        prds[entries].flags = 0;
        entries++;
    } while (entries * 65536 < len);
    prds[entries - 1].flags = 0x8000; /* end of table */
    outb(bm + 0, 0x08);       /* stopped; direction: to memory */
    outb(bm + 2, 0x06);       /* clear error and interrupt */
    outl(bm + 4, (u32)(u64)prds);
    outb(ATA_CMD + 1, 0x01); /* features: DMA */
    outb(ATA_CMD + 4, 0);
    outb(ATA_CMD + 5, 0);
    outb(ATA_CMD + 7, 0xa0); /* PACKET */
    wait_not_busy();
    /* The CDB in one string write, as Linux's iowrite16_rep does it. */
    const u8 *packet = cdb;
    u64 words = 6;
    __asm__ volatile("rep outsw" : "+S"(packet), "+c"(words) : "d"((u16)ATA_CMD) : "memory");
    outb(bm + 0, 0x09); /* start */
    u8 status;
    for (u64 spins = 0;; spins++) {
        status = inb(ATA_CMD + 7);
        if (!(status & (BSY | DRQ)))
            break;
        if (spins > 4000000000ul)
            fail("DMA TIMEOUT ", status);
        pause();
    }
    outb(bm + 0, 0x08); /* stop */
    return status & ERR ? inb(ATA_CMD + 1) : 0;
}

static u8 read10(u32 lba, u16 blocks)
{
    u8 cdb[12] = {0x28, 0, (u8)(lba >> 24), (u8)(lba >> 16), (u8)(lba >> 8), (u8)lba,
                  0, (u8)(blocks >> 8), (u8)blocks, 0, 0, 0};
    return dma_packet(cdb, (u32)blocks * 2048);
}

const u8 *atapi_read(u32 lba, u16 blocks)
{
    if ((u32)blocks * 2048 > CHUNK)
        fail("DMA REQUEST TOO LARGE ", blocks);
    u8 error = read10(lba, blocks);
    if (error)
        fail("DMA READ ERROR ", error);
    return buffer;
}

u32 atapi_open(void)
{
    u32 ide = 0xffffffff;
    for (u32 bdf = 0; bdf < 256 && ide == 0xffffffff; bdf++)
        if (pci_cfg_read(bdf, 0) == 0x70108086)
            ide = bdf;
    if (ide == 0xffffffff)
        fail("DMA NO IDE ", 0);
    g_puts("DMA IDE\n");
    u16 bar4 = (u16)(pci_cfg_read(ide, 0x20) & ~3u);
    if (!bar4)
        fail("DMA NO BAR4 ", 0);
    bm = bar4 + 8; /* the secondary channel's registers: the CD is its master */
    pci_cfg_write(ide, 0x04, (pci_cfg_read(ide, 0x04) & 0xffff) | 0x05); /* I/O, bus master */

    outb(ATA_CTRL, 0x02); /* nIEN: this driver polls */
    outb(ATA_CMD + 6, 0xa0);
    wait_not_busy();
    /* TEST UNIT READY until the drive has taken in its disc (no data: nothing moves). */
    static const u8 tur[12];
    for (int i = 0; i < 100 && dma_packet(tur, 0); i++)
        ;
    static const u8 capacity[12] = {0x25};
    u8 error = dma_packet(capacity, 8);
    if (error)
        fail("DMA CAPACITY ERROR ", error);
    u32 last = (u32)buffer[0] << 24 | (u32)buffer[1] << 16 | (u32)buffer[2] << 8 | buffer[3];
    report("DMA CAPACITY ", last);
    return last;
}

static void atapi_dma(u32 request)
{
    u32 last = atapi_open();
    u8 error = read10(16, 1);
    if (error)
        fail("DMA PVD ERROR ", error);
    report("DMA PVD ", first8(buffer));

    u64 sum = 0;
    outb(DEBUG_PORT, 0x40);
    for (u32 lba = 0; lba <= last;) {
        u32 blocks = last + 1 - lba;
        if (blocks > request / 2048)
            blocks = request / 2048;
        error = read10(lba, (u16)blocks);
        if (error)
            fail("DMA READ ERROR ", error);
        /* Word loads (the buffer is aligned; may_alias keeps GCC honest about types):
         * memcpy here goes byte by byte (-fno-builtin) and would cost more than the I/O. */
        typedef u64 __attribute__((may_alias)) word;
        const word *words = (const word *)buffer;
        for (u32 i = 0; i < blocks * 2048 / 8; i++)
            sum += words[i];
        lba += blocks;
    }
    outb(DEBUG_PORT, 0x41);
    /* What one register access costs (a VM exit each): status reads between milestones
     * 0x42 and 0x43, for the benchmark to weigh the requests' REGISTER_ACCESSES against. */
    outb(DEBUG_PORT, 0x42);
    for (int i = 0; i < STATUS_READS; i++)
        inb(ATA_CMD + 7);
    outb(DEBUG_PORT, 0x43);
    report("DMA SUM ", sum);
    report("DMA BM ", inb(bm + 2) & 0x03);
    g_puts("DMA DONE\n");
}

void atapi_dma_main(void)
{
    atapi_dma(128 * 1024);
}

void atapi_dma_1m_main(void)
{
    atapi_dma(CHUNK);
}
