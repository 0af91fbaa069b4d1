/*
 * test=journal: a guest whose progress is in its memory and on its disk at once, for the
 * snapshot and suspend tests. It counts ticks about 20 ms apart; at each, it writes the
 * tick into the sector of that number on its virtio-blk disk (a whole sector of three
 * words, repeated: the tick, this boot's id — the TSC when it started — and a checksum
 * of every tick so far, kept in memory), and once the write completed prints
 * "JOURNAL <tick> <boot id> <checksum>". A guest resumed where it was goes on with the
 * next tick, the same boot id and a checksum that follows; one that booted again starts
 * at tick 1 with another boot id. 'q' on COM1 powers it off.
 */
#include "guest.h"

static u8 sector[512] __attribute__((aligned(512)));

/* The checksum after `tick`, from the one before it (the tests compute the same). */
static u64 next_sum(u64 sum, u64 tick)
{
    return sum * 31 + tick;
}

void journal_main(void)
{
    u64 boot = rdtsc();
    g_lapic_enable();
    g_virtio_find(0x1042);
    g_virtio_start();
    u64 sectors = *(volatile u64 *)g_virtio_config();
    u64 sum = 0;
    for (u64 tick = 1;; tick++) {
        sum = next_sum(sum, tick);
        journal_sector(sector, tick, boot, sum);
        u8 status = g_blk_request(BLK_OUT, tick % sectors, sector, 512, 0);
        if (status) {
            report("JOURNAL FAIL ", status);
            g_power_off();
        }
        report_words("JOURNAL ", (u64[]){tick, boot, sum}, 3);
        u64 start = rdtsc();
        while (rdtsc() - start < 20000000) {
            if ((inb(0x3f8 + 5) & 1) && inb(0x3f8) == 'q')
                g_power_off();
            for (int i = 0; i < 20000; i++)
                pause();
        }
    }
}

/*
 * test=snapbench, for the snapshot benchmark (1 GiB of memory or more): writes a word into
 * every 4 KiB page of [256 MiB, 512 MiB), 256 MiB touched, then writes 5 to the debug port
 * and prints "TOUCHED". From then on it writes 6 to the debug port every few tens of
 * microseconds, so a machine restored from a snapshot shows its first instructions as
 * the next 6, and prints a '.' about every 10 ms. 'q' on COM1 powers it off.
 */
void snapbench_main(void)
{
    volatile u64 *base = (volatile u64 *)0x10000000ul;
    for (u64 page = 0; page < (256ul << 20) / 4096; page++)
        base[page * 512] = (page * 0x9e3779b97f4a7c15ul) | 1;
    outb(0xe9, 5);
    g_puts("TOUCHED\n");
    u64 last = rdtsc();
    for (;;) {
        outb(0xe9, 6);
        for (int i = 0; i < 2000; i++)
            pause();
        if (rdtsc() - last > 10000000) {
            last = rdtsc();
            g_puts(".");
            if ((inb(0x3f8 + 5) & 1) && inb(0x3f8) == 'q')
                g_power_off();
        }
    }
}
