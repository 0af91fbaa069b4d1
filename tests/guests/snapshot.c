/*
 * test=snapshot: a guest keeping busy at once everything a snapshot must keep, for the
 * snapshot and suspend tests.
 *  - Its clock: each tick (60 M TSC ticks, 20-60 ms) is an interrupt of the local APIC
 *    timer in TSC-deadline mode, whose handler arms the next tick's at once, so a saved
 *    machine always holds an armed timer (in IA32_TSC_DEADLINE, which KVM drops if the
 *    LAPIC is restored after the MSRs). A timer that is lost stops the ticks.
 *  - Ring-3 work in memory: a 1 MiB area whose every word follows the tick (checked, then
 *    rewritten, each tick), and a checksum of every tick so far.
 *  - Its disk: each tick written into the sector of that number (as test=journal), and
 *    between ticks 4 KiB writes one after another into the 1 MiB from sector 2048, so one
 *    is nearly always in flight; each tick reads the last of them back.
 *  - Its screen: a 256x64 virtio-gpu scanout; each tick paints column tick % 256 in a
 *    colour that says the tick (red 0x80, green and blue the tick's low 16 bits) and
 *    flushes that column alone, so the rest of the screen is what the host kept.
 *  - Its serial port: typed characters gather into a line; a newline prints it as
 *    "LINE <text>", and the line "q" powers off.
 * Each tick it prints "SNAP <tick> <boot id> <checksum> <characters pending> <writes>"
 * (hex; the boot id is the TSC when it started), or "SNAP BAD <what> <value>" and powers
 * off if its memory or its disk does not hold what it wrote.
 */
#include "guest.h"

#define TICK_TSC 60000000ul
#define AREA ((volatile u64 *)0x1000000ul)
#define AREA_WORDS ((1ul << 20) / 8)
#define FILL_SECTOR 2048ul
#define FILL_SLOTS 256ul
#define SCREEN_W 256
#define SCREEN_H 64
#define LAPIC_LVT_TIMER ((volatile u32 *)0xfee00320ul)
#define LAPIC_TIMER_COUNT ((volatile u32 *)0xfee00380ul)
#define LAPIC_TIMER_DIVIDE ((volatile u32 *)0xfee003e0ul)
#define VEC_TIMER 0x34

/* testguest.S's timer interrupt counts here, and arms the next tick's deadline. */
extern volatile u64 irq_count_timer;
extern volatile u64 timer_period;

static u8 sector[512] __attribute__((aligned(512)));
static u8 fill[4096] __attribute__((aligned(4096)));
static u8 readback[4096] __attribute__((aligned(4096)));
static u32 screen[SCREEN_W * SCREEN_H] __attribute__((aligned(4096)));
static struct vdev gpu;
static u32 gpu_resp[6];
static char line[64];
static u64 pending;

static void bad(const char *what, u64 value)
{
    g_puts("SNAP BAD ");
    g_puts(what);
    g_puts(" ");
    g_put_hex(value);
    g_newline();
    g_power_off();
}

/* What word `i` of the area holds after `tick`. */
static u64 word(u64 boot, u64 tick, u64 i)
{
    return (tick << 40) ^ (i * 0x9e3779b97f4a7c15ul) ^ boot;
}

/* A virtio-gpu command of `words` 32-bit words, which must answer OK_NODATA. */
static void gpu_cmd(const u32 *request, u32 words)
{
    gpu_resp[0] = 0;
    v_request(&gpu, 0, request, words * 4, gpu_resp, sizeof gpu_resp);
    if (gpu_resp[0] != 0x1100)
        bad("GPU", ((u64)request[0] << 32) | gpu_resp[0]);
}

/* TRANSFER_TO_HOST_2D and RESOURCE_FLUSH of a rectangle of resource 1 (virtio 1.2 §5.7.6). */
static void gpu_show(u32 x, u32 y, u32 w, u32 h)
{
    u64 offset = ((u64)y * SCREEN_W + x) * 4;
    u32 transfer[14] = {0x105, 0, 0, 0, 0, 0, x, y, w, h, (u32)offset, (u32)(offset >> 32), 1, 0};
    gpu_cmd(transfer, 14);
    u32 flush[12] = {0x104, 0, 0, 0, 0, 0, x, y, w, h, 1, 0};
    gpu_cmd(flush, 12);
}

static void gpu_start(void)
{
    v_find(&gpu, 0x1050);
    v_start(&gpu, 2);
    /* Resource 1: 256x64 B8G8R8X8, backed by `screen`, on scanout 0. */
    u32 create[10] = {0x101, 0, 0, 0, 0, 0, 1, 2, SCREEN_W, SCREEN_H};
    gpu_cmd(create, 10);
    u64 at = (u64)screen;
    u32 attach[12] = {0x106, 0, 0, 0, 0, 0, 1, 1, (u32)at, (u32)(at >> 32), sizeof screen, 0};
    gpu_cmd(attach, 12);
    u32 scanout[12] = {0x103, 0, 0, 0, 0, 0, 0, 0, SCREEN_W, SCREEN_H, 0, 1};
    gpu_cmd(scanout, 12);
    gpu_show(0, 0, SCREEN_W, SCREEN_H);
}

/* A typed character: into the line, which a newline prints (or, "q", ends the guest). */
static void typed(u8 c)
{
    if (c == '\r' || c == '\n') {
        if (pending == 1 && line[0] == 'q')
            g_power_off();
        line[pending] = 0;
        g_puts("LINE ");
        g_puts(line);
        g_newline();
        pending = 0;
    } else if (pending + 1 < sizeof line) {
        line[pending++] = (char)c;
    }
}

void snapshot_main(void)
{
    u64 boot = rdtsc();
    g_lapic_enable();
    g_virtio_find(0x1042);
    g_virtio_start();
    gpu_start();
    for (u64 i = 0; i < AREA_WORDS; i++)
        AREA[i] = word(boot, 0, i);
    u64 sum = 0, writes = 0;
    /* The first tick by a one-shot count; its interrupt arms the TSC deadline of each
     * next one (ring 0 writes the MSR). */
    timer_period = TICK_TSC;
    u64 fired = irq_count_timer;
    *LAPIC_TIMER_DIVIDE = 0xb; /* divide by 1 */
    *LAPIC_LVT_TIMER = VEC_TIMER;
    *LAPIC_TIMER_COUNT = 1000000;
    for (u64 tick = 1;; tick++) {
        /* Until the timer fires: disk writes one after another, and the serial port. */
        while (irq_count_timer == fired) {
            for (u64 i = 0; i < sizeof fill / 8; i++)
                ((u64 *)fill)[i] = i & 1 ? boot : writes;
            if (g_blk_request(BLK_OUT, FILL_SECTOR + (writes % FILL_SLOTS) * 8, fill,
                              sizeof fill, 0))
                bad("WRITE", writes);
            writes++;
            if (inb(0x3f8 + 5) & 1)
                typed(inb(0x3f8));
        }
        fired = irq_count_timer;
        /* Memory: every word as the last tick left it, then this tick's. */
        for (u64 i = 0; i < AREA_WORDS; i++) {
            if (AREA[i] != word(boot, tick - 1, i))
                bad("MEMORY", i);
            AREA[i] = word(boot, tick, i);
        }
        sum = sum * 31 + tick;
        /* The disk: the last fill write reads back as written; this tick's sector. */
        u64 last = writes - 1;
        if (writes && g_blk_request(BLK_IN, FILL_SECTOR + (last % FILL_SLOTS) * 8, readback,
                                    sizeof readback, 1))
            bad("READ", last);
        if (writes && (((u64 *)readback)[0] != last || ((u64 *)readback)[511] != boot))
            bad("DISK", last);
        journal_sector(sector, tick, boot, sum);
        if (g_blk_request(BLK_OUT, tick % FILL_SECTOR, sector, 512, 0))
            bad("WRITE", tick);
        /* The screen: this tick's column. */
        u32 x = tick % SCREEN_W;
        for (u32 y = 0; y < SCREEN_H; y++)
            screen[y * SCREEN_W + x] = 0x800000u | (u32)(tick & 0xffff);
        gpu_show(x, 0, 1, SCREEN_H);
        report_words("SNAP ", (u64[]){tick, boot, sum, pending, writes}, 5);
    }
}
