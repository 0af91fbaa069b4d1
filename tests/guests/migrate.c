/*
 * test=migrate, migrate-100, migrate-idle and migrate-storm: a guest that keeps its memory, its disk and its
 * own clock busy, for the live-migration tests. Memory: it rewrites the 64 MiB from 64 MiB
 * one page at a time, each page's first word `sweep << 32 | page` (sweep counting whole
 * passes over the area, from 1), about 20 MB/s (migrate), 100 MB/s (migrate-100), not at
 * all (migrate-idle) or as fast as it can (migrate-storm, which no link keeps up with). Disk: every tick (about 20 ms of TSC) it
 * writes the tick into that sector of its virtio-blk disk, as test=journal does, and reads
 * it back into a page only the device writes, which must still hold it a tick later. Clock:
 * it reads the TSC between every two pages and keeps the largest step (a migration's pause
 * does not show in it: the TSC goes on from where it was when the machine paused); and it
 * watches the CMOS clock's seconds, which follow the host's wall clock, counting the TSC
 * ticks of each whole second: the second a migration paused the machine in has that many
 * fewer (its own measure of the pause). Each tick it checks every page of the area (behind the
 * writer this sweep's word, ahead of it the last sweep's), then prints
 * "MIGRATE <tick> <boot id> <sum> <largest step in TSC ticks> <tsc> <TSC ticks of the last
 * whole second>" (hex), or
 * "MIGRATE BAD <page>" and powers off if a page holds what it never wrote. 'q' on COM1
 * powers it off.
 */
#include "guest.h"

#define AREA_START 0x4000000ul
#define AREA_PAGES ((64ul << 20) / 4096)
/* TSC ticks a tick lasts (20 ms at 1 GHz, less on faster clocks). */
#define TICK_TSC 20000000ul
/* Pages a tick: about 20 MB/s at 1 GHz (migrate), five times that (migrate-100); none
 * (migrate-idle); all it can (migrate-storm). */
#define STORM (~0ul)

static u8 sector[512] __attribute__((aligned(512)));
/* Where the disk reads into: a page of its own, which only the device writes (so only the
 * VMM's own record of what it wrote brings it over in a migration). */
static u8 readback[4096] __attribute__((aligned(4096)));

/* The CMOS clock's seconds register (BCD or binary: only its changes matter). */
static u8 rtc_seconds(void)
{
    outb(0x70, 0x00);
    return inb(0x71);
}

static volatile u64 *page_word(u64 page)
{
    return (volatile u64 *)(AREA_START + page * 4096);
}

/* Whether `page` holds what the writer left: this sweep's word behind the writer (at
 * `next`), the last sweep's ahead of it (nothing on the first sweep). */
static int page_ok(u64 page, u64 next, u64 sweep)
{
    u64 want_sweep = page < next ? sweep : sweep - 1;
    u64 want = want_sweep ? (want_sweep << 32) | page : 0;
    return *page_word(page) == want;
}

static void run(u64 pages_per_tick)
{
    u64 boot = rdtsc();
    g_lapic_enable();
    g_virtio_find(0x1042);
    g_virtio_start();
    u64 sectors = *(volatile u64 *)g_virtio_config();
    u64 sum = 0, sweep = 1, next = 0, largest = 0;
    u64 last = rdtsc();
    /* The CMOS clock: its last seconds value, the TSC when it changed, and the TSC ticks
     * of the last whole second (0 until one has passed). */
    u8 second = rtc_seconds();
    u64 second_began = 0, whole_second = 0, polls = 0;
    for (u64 tick = 1;; tick++) {
        u64 start = rdtsc(), written = 0;
        while (rdtsc() - start < TICK_TSC) {
            if (written < pages_per_tick) {
                *page_word(next) = (sweep << 32) | next;
                written++;
                if (++next == AREA_PAGES) {
                    next = 0;
                    sweep++;
                }
            } else {
                for (int i = 0; i < 50; i++)
                    pause();
            }
            u64 now = rdtsc();
            if ((++polls & 15) == 0) {
                u8 seconds = rtc_seconds();
                if (seconds != second) {
                    if (second_began)
                        whole_second = now - second_began;
                    second = seconds;
                    second_began = now;
                }
            }
            if (now - last > largest)
                largest = now - last;
            last = now;
            if ((inb(0x3f8 + 5) & 1) && inb(0x3f8) == 'q')
                g_power_off();
        }
        /* Every page of the area, on both sides of the writer. */
        for (u64 page = 0; page < AREA_PAGES; page++) {
            if (!page_ok(page, next, sweep)) {
                report("MIGRATE BAD ", page);
                g_power_off();
            }
        }
        /* The last tick's sector, read back last tick, is still there. */
        if (tick > 1 && (*(volatile u64 *)readback != tick - 1 ||
                         *(volatile u64 *)(readback + 16) != sum)) {
            report("MIGRATE BAD READBACK ", *(volatile u64 *)readback);
            g_power_off();
        }
        sum = sum * 31 + tick;
        journal_sector(sector, tick, boot, sum);
        u8 status = g_blk_request(BLK_OUT, tick % sectors, sector, 512, 0);
        if (status) {
            report("MIGRATE FAIL ", status);
            g_power_off();
        }
        status = g_blk_request(BLK_IN, tick % sectors, readback, 512, 1);
        if (status) {
            report("MIGRATE FAIL ", status);
            g_power_off();
        }
        u64 line[] = {tick, boot, sum, largest, rdtsc(), whole_second};
        report_words("MIGRATE ", line, 6);
        largest = 0;
        last = rdtsc();
    }
}

void migrate_main(void)
{
    run(100);
}

void migrate_100_main(void)
{
    run(500);
}

void migrate_idle_main(void)
{
    run(0);
}

void migrate_storm_main(void)
{
    run(STORM);
}
