/*
 * What the BIOS leaves for an OS, checked from ring 3 by test=firmware.
 *
 * bios_area_report: whether the BIOS area (0xF0000-0xFFFFF) is read-only after boot, as
 * the firmware leaves it through the host bridge's PAM registers: "BIOS AREA read-only"
 * when a byte written there does not change, else "BIOS AREA writable" (and the byte is
 * put back).
 *
 * smbios_report: the SMBIOS tables the firmware put in the BIOS area, as an OS (dmidecode) finds them:
 * the entry point by its anchor on a 16-byte boundary in 0xF0000-0xFFFFF ("_SM3_" for
 * SMBIOS 3.0, else "_SM_" for 2.x), then the type 1 structure (System Information). Prints
 * "SMBIOS <major>.<minor> UUID <uuid>" (the UUID as text, its first three fields
 * little-endian as SMBIOS 2.6+ stores them), or "SMBIOS none".
 *
 * mptable_report: the MultiProcessor table (Intel MP spec 1.4) an OS without ACPI reads:
 * the "_MP_" floating pointer in the BIOS area, its "PCMP" configuration table, and there
 * the I/O interrupt entry of the ISA bus's IRQ 0 (the timer). Prints "MPTABLE IRQ0 PIN
 * <IOAPIC pin>" and "MPTABLE PCI <entries> <entries whose pin is the device's Interrupt
 * Line>", or "MPTABLE none".
 */
#include "guest.h"

static const u8 *find_anchor(const char *anchor, size_t len)
{
    for (u64 at = 0xf0000; at < 0x100000; at += 16)
        if (!memcmp((const void *)at, anchor, len))
            return (const u8 *)at;
    return 0;
}

static u32 le32(const u8 *p)
{
    return (u32)p[0] | (u32)p[1] << 8 | (u32)p[2] << 16 | (u32)p[3] << 24;
}

static char *hex(char *out, const u8 *bytes, int n)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < n; i++) {
        *out++ = digits[bytes[i] >> 4];
        *out++ = digits[bytes[i] & 15];
    }
    return out;
}

void smbios_report(void)
{
    const u8 *table;
    u32 size;
    u8 major, minor;
    const u8 *ep = find_anchor("_SM3_", 5);
    if (ep) {
        major = ep[7];
        minor = ep[8];
        size = le32(ep + 12);
        table = (const u8 *)(u64)le32(ep + 16); /* below 4 GiB here */
    } else if ((ep = find_anchor("_SM_", 4))) {
        major = ep[6];
        minor = ep[7];
        size = (u32)ep[0x16] | (u32)ep[0x17] << 8;
        table = (const u8 *)(u64)le32(ep + 0x18);
    } else {
        g_puts("SMBIOS none\n");
        return;
    }
    /* Walk the structures (formatted part, then strings up to a double NUL), bounded by
     * the table's size. */
    const u8 *end = table + size;
    for (const u8 *s = table; s + 4 <= end;) {
        if (s[0] == 1 && s[1] >= 0x19) {
            u8 u[16];
            memcpy(u, s + 8, 16);
            /* Text order: time_low, time_mid, time_hi little-endian in the table. */
            u8 text[16] = {u[3], u[2], u[1], u[0], u[5], u[4], u[7], u[6],
                           u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]};
            char line[64];
            char *p = line;
            p = hex(p, text, 4);
            *p++ = '-';
            p = hex(p, text + 4, 2);
            *p++ = '-';
            p = hex(p, text + 6, 2);
            *p++ = '-';
            p = hex(p, text + 8, 2);
            *p++ = '-';
            p = hex(p, text + 10, 6);
            *p = 0;
            char version[8] = {'0' + major, '.', '0' + minor / 10 % 10, '0' + minor % 10, 0};
            if (minor < 10) {
                version[2] = '0' + minor;
                version[3] = 0;
            }
            g_puts("SMBIOS ");
            g_puts(version);
            g_puts(" UUID ");
            g_puts(line);
            g_newline();
            return;
        }
        if (s[0] == 127)
            break;
        const u8 *strings = s + s[1];
        if (s[1] < 4)
            break;
        while (strings + 1 < end && (strings[0] || strings[1]))
            strings++;
        s = strings + 2;
    }
    g_puts("SMBIOS no system information\n");
}

void bios_area_report(void)
{
    volatile u8 *byte = (volatile u8 *)0xffff0; /* the reset vector's jump */
    u8 before = *byte;
    *byte = (u8)~before;
    u8 after = *byte;
    if (after == before) {
        g_puts("BIOS AREA read-only\n");
    } else {
        *byte = before;
        g_puts("BIOS AREA writable\n");
    }
}

static u16 le16(const u8 *p)
{
    return (u16)(p[0] | p[1] << 8);
}

/* Dword `offset` of PCI 00:dev.fn's configuration space, by mechanism #1. */
static u32 pci_read(u8 dev, u8 fn, u8 offset)
{
    return pci_cfg_read((u32)dev << 3 | fn, offset);
}

/* Whether a function of PCI device `dev` has interrupt pin `pin` (1 = INTA) on `line`. */
static int has_line(u8 dev, u8 pin, u8 line)
{
    for (u8 fn = 0; fn < 8; fn++) {
        u32 v = pci_read(dev, fn, 0x3c);
        if ((u8)(v >> 8) == pin && (u8)v == line)
            return 1;
    }
    return 0;
}

void mptable_report(void)
{
    const u8 *fp = find_anchor("_MP_", 4);
    const u8 *table = fp ? (const u8 *)(u64)le32(fp + 4) : 0;
    if (!table || (u64)table >= 0x100000 || memcmp(table, "PCMP", 4)) {
        g_puts("MPTABLE none\n");
        return;
    }
    const u8 *end = table + le16(table + 4);
    int isa = -1, pci = -1, pin0 = -1, pci_entries = 0, pci_matching = 0;
    /* Bus entries come before interrupt entries (MP spec §4.3). */
    for (const u8 *e = table + 0x2c; e < end;) {
        if (e[0] == 0) { /* processor */
            e += 20;
            continue;
        }
        if (e[0] == 1 && !memcmp(e + 2, "ISA", 3))
            isa = e[1];
        if (e[0] == 1 && !memcmp(e + 2, "PCI", 3))
            pci = e[1];
        if (e[0] == 3 && e[1] == 0 && e[4] == isa && e[5] == 0)
            pin0 = e[7];
        if (e[0] == 3 && e[1] == 0 && e[4] == pci) {
            /* Source: device << 2 | pin (0 = INTA). */
            pci_entries++;
            if (has_line(e[5] >> 2, (e[5] & 3) + 1, e[7]))
                pci_matching++;
        }
        e += 8;
    }
    report("MPTABLE IRQ0 PIN ", (u64)pin0);
    g_puts("MPTABLE PCI ");
    g_put_hex((u64)pci_entries);
    g_puts(" ");
    g_put_hex((u64)pci_matching);
    g_newline();
}
