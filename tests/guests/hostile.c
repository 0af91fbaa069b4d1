/*
 * Test guests that attack the host through their devices (the VMM must shrug them off),
 * and ones that trip the faulty test device (the VMM must survive its own bugs).
 *
 * test=blk-hostile: a guest on a raw disk plants a qcow2 image at the start of it — one
 * whose header names a host file as its backing file or external data file, as prepared by
 * the host test at sector PAYLOAD — and reboots. A VMM that guessed the format from the
 * bytes would now open the disk as qcow2 and hand the guest that host file. After the
 * reboot the guest reports what it sees: the capacity, its own sector 0 and a probe sector,
 * then writes the probe sector and reads it back. It plants only while sector 0 is not
 * qcow2 and the probe sector holds the host's marker, so a VMM that fell for the attack
 * shows the host file's bytes in the report instead of rebooting forever.
 */
#include "guest.h"

/* The faulty test device's port (vmm/src/devices/faulty.rs, test builds only). */
#define FAULTY_PORT 0xea

/* Where the host test put the image to plant, and how much of it is copied. */
#define PAYLOAD 2048
#define PAYLOAD_SECTORS 640
/* A sector between the planted image and the payload: the host test marks it. */
#define PROBE 1024

static u8 sector[512];
static u8 pattern[512];

static void check(const char *what, u8 status)
{
    if (status != 0) {
        report(what, status);
        g_puts("HOSTILE FAIL\n");
        g_power_off();
    }
}

static void plant(void)
{
    for (u64 i = 0; i < PAYLOAD_SECTORS; i++) {
        check("HOSTILE READ ", g_blk_request(BLK_IN, PAYLOAD + i, sector, 512, 1));
        check("HOSTILE WRITE ", g_blk_request(BLK_OUT, i, sector, 512, 0));
    }
    check("HOSTILE FLUSH ", g_blk_request(BLK_FLUSH, 0, 0, 0, 0));
    g_puts("HOSTILE PLANTED\n");
    g_reset_kbd();
}

void blk_hostile_main(void)
{
    g_lapic_enable();
    g_virtio_find(0x1042);
    g_virtio_start();
    u64 capacity = *(volatile u64 *)g_virtio_config();
    check("HOSTILE PROBE READ ", g_blk_request(BLK_IN, PROBE, sector, 512, 1));
    u64 probe = first8(sector);
    check("HOSTILE SECTOR0 READ ", g_blk_request(BLK_IN, 0, sector, 512, 1));
    if (memcmp(sector, "QFI\xfb", 4) != 0 && probe == first8("PROBEDAT"))
        plant();
    report("HOSTILE CAPACITY ", capacity);
    report("HOSTILE SECTOR0 ", first8(sector));
    report("HOSTILE PROBE ", probe);
    for (u32 i = 0; i < 512; i++)
        pattern[i] = (u8)(i * 5 + 1);
    check("HOSTILE PROBE WRITE ", g_blk_request(BLK_OUT, PROBE, pattern, 512, 0));
    memset(sector, 0, sizeof sector);
    check("HOSTILE PROBE READ ", g_blk_request(BLK_IN, PROBE, sector, 512, 1));
    report("HOSTILE SAME ", memcmp(sector, pattern, 512) == 0);
    check("HOSTILE FLUSH ", g_blk_request(BLK_FLUSH, 0, 0, 0, 0));
    g_power_off();
}

/* test=fault-panic: the faulty device panics in the vCPU thread that writes to it. */
void fault_panic_main(void)
{
    g_puts("FAULT PANIC\n");
    outb(FAULTY_PORT, 1);
    g_puts("FAULT SURVIVED\n");
}

/* test=fault-syscall: the faulty device makes a system call the VM process's sandbox
 * forbids; the sandbox ends the process (the test device's work stops there). */
void fault_syscall_main(void)
{
    g_puts("FAULT SYSCALL\n");
    outb(FAULTY_PORT, 3);
    g_puts("FAULT SURVIVED\n");
}

/* test=fault-open: the faulty device opens a file outside the VM's folder (/etc/passwd);
 * it says whether it could: 1 opened, 2 refused. */
void fault_open_main(void)
{
    outb(FAULTY_PORT, 4);
    u8 result = inb(FAULTY_PORT);
    g_puts(result == 1 ? "FAULT OPEN ALLOWED\n" : result == 2 ? "FAULT OPEN DENIED\n"
                                                               : "FAULT OPEN UNKNOWN\n");
}

/* test=fault-hang: the faulty device blocks the vCPU thread that writes to it. */
void fault_hang_main(void)
{
    g_puts("FAULT HANG\n");
    outb(FAULTY_PORT, 2);
    g_puts("FAULT SURVIVED\n");
}
