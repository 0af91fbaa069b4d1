/*
 * test=install: what an OS installer does, in miniature. Booted by the firmware from the
 * CD, it reads the disc's El Torito boot image (the boot record at block 17 names the
 * boot catalog, whose initial entry gives the image's place and size) by DMA: that image
 * is this guest behind its boot sector, which is also what an MBR disk of it holds
 * (firmware/pc-boot.S boots either). It changes the command line in the boot sector to
 * test=installed, writes the whole to the virtio-blk disk from sector 0, flushes, prints
 * "INSTALL <bytes>" and resets the machine, whose firmware then finds a bootable disk.
 *
 * test=installed: the installed system. Prints "INSTALLED" and powers off.
 */
#include "guest.h"

#define BOOT_RECORD 17

static u32 le32(const u8 *p)
{
    return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

static void fail(const char *what, u64 value)
{
    report(what, value);
    g_power_off();
}

/* The image, at most 1 MiB (what one read returns). */
static u8 image[1024 * 1024] __attribute__((aligned(4096)));

void install_main(void)
{
    atapi_open();
    const u8 *block = atapi_read(BOOT_RECORD, 1);
    if (block[0] != 0 || memcmp(block + 1, "CD001", 5) || memcmp(block + 7, "EL TORITO", 9))
        fail("INSTALL NO BOOT RECORD ", first8(block));
    u32 catalog = le32(block + 0x47);
    block = atapi_read(catalog, 1);
    /* The validation entry, then the initial entry: bootable (0x88), no emulation. */
    const u8 *initial = block + 32;
    if (block[0] != 1 || initial[0] != 0x88 || initial[1] != 0)
        fail("INSTALL NO BOOT ENTRY ", first8(block));
    u32 bytes = (u32)(initial[6] | initial[7] << 8) * 512; /* in 512-byte sectors */
    u32 lba = le32(initial + 8);
    if (bytes == 0 || bytes > sizeof image)
        fail("INSTALL IMAGE SIZE ", bytes);
    memcpy(image, atapi_read(lba, (u16)((bytes + 2047) / 2048)), bytes);

    /* The boot sector's command line (32 bytes of room, firmware/pc-boot.S). */
    static const char from[] = "test=install";
    static const char to[] = "test=installed";
    u32 at = 0;
    while (at + sizeof to <= 510 && memcmp(image + at, from, sizeof from))
        at++;
    if (at + sizeof to > 510)
        fail("INSTALL NO COMMAND LINE ", 0);
    memcpy(image + at, to, sizeof to);

    g_lapic_enable();
    g_virtio_find(0x1042);
    g_virtio_start();
    for (u32 done = 0; done < bytes; done += 32768) {
        u32 n = bytes - done > 32768 ? 32768 : bytes - done;
        u8 status = g_blk_request(BLK_OUT, done / 512, image + done, (n + 511) / 512 * 512, 0);
        if (status)
            fail("INSTALL WRITE ", status);
    }
    if (g_blk_request(BLK_FLUSH, 0, 0, 0, 0))
        fail("INSTALL FLUSH ", 0);
    report("INSTALL ", bytes);
    g_reset_kbd();
}

void installed_main(void)
{
    g_puts("INSTALLED\n");
    g_power_off();
}
