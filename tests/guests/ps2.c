/*
 * test=ps2: the PS/2 keyboard as a driver without interrupts sees it, through the i8042.
 * Sets the controller up as Linux's i8042 and atkbd do (interfaces off, output flushed,
 * self-test, command byte with translation and no interrupts, keyboard reset, identify),
 * prints "PS2 SELFTEST <byte>", "PS2 RESET <ack> <BAT>", "PS2 ID <ack> <id 1> <id 2>" and
 * "PS2 READY", then prints each byte the keyboard sends as "KBD <byte>" until Esc comes
 * up (0x81 in set 1). Then it turns translation off, asks the keyboard for its set
 * ("PS2 SET <ack> <ack> <set>", reading each ACK before sending on, as drivers do),
 * prints "PS2 RAW" and the raw set 2 bytes the same way
 * until Esc comes up (F0 76). Then set 3 with every key make/break ("PS2 SET3 <acks>",
 * "PS2 SET3 READY"), its bytes until Esc comes up (F0 08), and it powers off.
 *
 * test=ps2-mouse: the PS/2 mouse the same way, as Linux's psmouse finds one: reset
 * ("MOUSE RESET <ack> <BAT> <id>"), the IntelliMouse sample-rate sequence and its ID
 * ("MOUSE ID <ack> <id>"), then the Explorer's ("MOUSE ID ..." again), reporting on,
 * "MOUSE READY", and then each byte as "AUX <byte>" until a packet shows the middle
 * button up after it was down; then it powers off.
 */
#include "guest.h"

#define DATA 0x60
#define STATUS 0x64
#define OUTPUT_FULL 0x01
#define INPUT_FULL 0x02

/* The next byte from the controller (polling; 0 after about a second of nothing). */
static u8 receive(void)
{
    for (u64 spins = 0; spins < 200000000ul; spins++) {
        if (inb(STATUS) & OUTPUT_FULL)
            return inb(DATA);
        pause();
    }
    return 0;
}

static void send(u16 port, u8 byte)
{
    while (inb(STATUS) & INPUT_FULL)
        pause();
    outb(port, byte);
}

static void print_bytes(const char *label, int n)
{
    g_puts(label);
    for (int i = 0; i < n; i++) {
        g_puts(" ");
        g_put_hex(receive());
    }
    g_newline();
}

/* Prints every byte until `last` follows `before` (or `before` is 0). */
static void echo_until(u8 before, u8 last)
{
    u8 previous = 0;
    for (;;) {
        while (!(inb(STATUS) & OUTPUT_FULL))
            pause();
        u8 byte = inb(DATA);
        report("KBD ", byte);
        if (byte == last && (before == 0 || previous == before))
            return;
        previous = byte;
    }
}

void ps2_main(void)
{
    send(STATUS, 0xad); /* keyboard interface off */
    send(STATUS, 0xa7); /* auxiliary interface off */
    while (inb(STATUS) & OUTPUT_FULL)
        inb(DATA);
    send(STATUS, 0xaa);
    print_bytes("PS2 SELFTEST", 1);
    send(STATUS, 0x60);
    send(DATA, 0x44); /* translate, system flag, no interrupts, keyboard on */
    send(STATUS, 0xae);
    send(DATA, 0xff);
    print_bytes("PS2 RESET", 2);
    send(DATA, 0xf2);
    print_bytes("PS2 ID", 3);
    g_puts("PS2 READY\n");
    echo_until(0, 0x81);
    send(STATUS, 0x60);
    send(DATA, 0x04); /* translation off */
    /* Each byte's ACK is read before the next byte goes out, as drivers do. */
    send(DATA, 0xf0);
    g_puts("PS2 SET ");
    g_put_hex(receive());
    send(DATA, 0x00);
    print_bytes("", 2);
    g_puts("PS2 RAW\n");
    echo_until(0xf0, 0x76);
    /* Set 3, every key make/break (as Linux's atkbd.set=3 asks). */
    send(DATA, 0xf0);
    g_puts("PS2 SET3 ");
    g_put_hex(receive());
    send(DATA, 0x03);
    g_puts(" ");
    g_put_hex(receive());
    send(DATA, 0xf8);
    g_puts(" ");
    g_put_hex(receive());
    g_newline();
    g_puts("PS2 SET3 READY\n");
    echo_until(0xf0, 0x08);
    g_power_off();
}

static void to_mouse(u8 byte)
{
    send(STATUS, 0xd4);
    send(DATA, byte);
}

/* Sends `byte` to the mouse and reads its ACK. */
static void mouse_command(u8 byte)
{
    to_mouse(byte);
    receive();
}

static void knock(u8 a, u8 b, u8 c)
{
    u8 rates[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        mouse_command(0xf3);
        mouse_command(rates[i]);
    }
    to_mouse(0xf2);
    print_bytes("MOUSE ID", 2);
}

void ps2_mouse_main(void)
{
    send(STATUS, 0xad);
    send(STATUS, 0xa7);
    while (inb(STATUS) & OUTPUT_FULL)
        inb(DATA);
    send(STATUS, 0x60);
    send(DATA, 0x44); /* translate, no interrupts, keyboard on, mouse on */
    send(STATUS, 0xa8);
    to_mouse(0xff);
    print_bytes("MOUSE RESET", 3);
    knock(200, 100, 80);
    knock(200, 200, 80);
    mouse_command(0xf4);
    g_puts("MOUSE READY\n");
    int middle = 0;
    for (;;) {
        u8 packet[4];
        for (int i = 0; i < 4; i++) {
            while (!(inb(STATUS) & OUTPUT_FULL))
                pause();
            packet[i] = inb(DATA);
            report("AUX ", packet[i]);
        }
        if (packet[0] & 0x04)
            middle = 1;
        else if (middle)
            break;
    }
    g_power_off();
}
