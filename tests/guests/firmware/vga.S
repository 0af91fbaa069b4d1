# The VGA test: an El Torito boot image (no emulation, loaded whole at 0000:7C00) that
# draws five screens through the VGA BIOS and the VGA's memory, says "SCREEN n" on COM1
# when each is up, and waits for a key (a make code read from the i8042 with interrupts
# off, so that the BIOS does not take it) before the next:
#   1. text mode 3: strings with attributes through int 10h AH=13h, and characters with
#      their attributes written straight to B800:0000 (letters, digits, line drawing);
#   2. the same mode with the BIOS's 8x8 font (int 10h AX=1112h): 80x50 text;
#   3. mode 12h (640x480, 16 colours in 4 planes): 16 bars in write mode 2, and a string
#      the BIOS draws into the planes;
#   4. mode 13h: a pattern written through the A0000 window in chain-4;
#   5. VBE mode 0x142 (640x480, 32 bits) with its linear framebuffer, drawn from 32-bit
#      protected mode at the address VBE function 4F01h gives.
# Keys: 'a', 'b', 'c', 'd' (set 1 make codes 0x1E, 0x30, 0x2E, 0x20) after screens 1-4.
# It halts after screen 5. A BIOS call that fails says "VGA FAIL" and halts.
.include "say.inc"

.set STACK, 0x7000
.set MODE_INFO, 0x6000
.set VBE_MODE, 0x142

.macro print text
    mov $\text, %si
    call puts
.endm

.code16
.globl _start
_start:
    start16 STACK
    # --- screen 1: text mode 3 ---
    mov $0x0003, %ax
    int $0x10
    mov $0x0100, %ax            # the cursor off: its start line's bit 5
    mov $0x2000, %cx
    int $0x10
    mov $strings, %si
    call write_strings
    mov $0xb800, %ax            # straight to the text buffer: row 12 on
    mov %ax, %es
    mov $(12 * 160), %di
    mov $0x01, %bl              # every character up to 0xAF, then 0xC0-0xDF
4:  mov %bl, %al
    mov %bl, %ah
    and $0x7f, %ah              # its attribute: no blink bit
    or $0x01, %ah
    stosw
    inc %bl
    cmp $0xb0, %bl
    jne 5f
    mov $0xc0, %bl
5:  cmp $0xe0, %bl
    jne 4b
    xor %ax, %ax
    mov %ax, %es
    print screen1
    mov $0x1e, %ah
    call wait_key

    # --- screen 2: 80x50 text with the 8x8 font ---
    mov $0x1112, %ax
    xor %bl, %bl
    int $0x10
    mov $0x0100, %ax            # the font load set the cursor's lines again: off
    mov $0x2000, %cx
    int $0x10
    mov $strings50, %si
    call write_strings
    print screen2
    mov $0x30, %ah
    call wait_key

    # --- screen 3: mode 12h, 16 colour bars in write mode 2, then the BIOS's text ---
    mov $0x0012, %ax
    int $0x10
    mov $0x3ce, %dx
    mov $0x0205, %ax            # GC 5: write mode 2
    out %ax, %dx
    mov $0xff08, %ax            # GC 8: all bits
    out %ax, %dx
    mov $0xa000, %ax
    mov %ax, %es
    xor %di, %di
    xor %dx, %dx                # line
1:  xor %cx, %cx                # byte in the line
2:  mov %cx, %ax                # colour: 5 bytes (40 pixels) a bar
    mov $5, %bl
    div %bl
    mov %al, %es:(%di)
    inc %di
    inc %cx
    cmp $80, %cx
    jne 2b
    inc %dx
    cmp $480, %dx
    jne 1b
    mov $0x3ce, %dx
    mov $0x0005, %ax            # back to write mode 0 for the BIOS
    out %ax, %dx
    xor %ax, %ax
    mov %ax, %es
    mov $strings12, %si
    call write_strings
    print screen3
    mov $0x2e, %ah
    call wait_key

    # --- screen 4: mode 13h, colour (x + y) & 0xFF with a white frame ---
    mov $0x0013, %ax
    int $0x10
    mov $0xa000, %ax
    mov %ax, %es
    xor %di, %di
    xor %dx, %dx                # y
6:  xor %cx, %cx                # x
7:  mov %cl, %al
    add %dl, %al
    cmp $0, %dx
    je 8f
    cmp $199, %dx
    je 8f
    cmp $0, %cx
    je 8f
    cmp $319, %cx
    jne 9f
8:  mov $15, %al
9:  stosb
    inc %cx
    cmp $320, %cx
    jne 7b
    inc %dx
    cmp $200, %dx
    jne 6b
    xor %ax, %ax
    mov %ax, %es
    print screen4
    mov $0x20, %ah
    call wait_key

    # --- screen 5: VBE 640x480x32 through its linear framebuffer ---
    mov $0x4f01, %ax
    mov $VBE_MODE, %cx
    mov $MODE_INFO, %di
    int $0x10
    cmp $0x004f, %ax
    jne fail
    mov $0x4f02, %ax
    mov $(0x4000 | VBE_MODE), %bx
    int $0x10
    cmp $0x004f, %ax
    jne fail
    cli
    lgdt gdt_pointer
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmp $0x08, $protected

fail:
    print failed
    halt

# Writes the strings at %si (row, column, attribute, length, text; a zero word ends them)
# through int 10h AH=13h, on page 0 (ES = 0).
write_strings:
1:  lodsw                       # row, column
    test %ax, %ax
    jz 2f
    mov %ax, %dx
    lodsw                       # attribute, length
    movzbw %al, %bx             # page 0, the attribute
    movzbw %ah, %cx
    mov %si, %bp
    add %cx, %si
    mov $0x1300, %ax
    int $0x10
    jmp 1b
2:  ret

# Prints the NUL-terminated string at %si on COM1.
puts:
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret

# Waits, interrupts off, until the i8042 hands over the make code in %ah.
wait_key:
    cli
1:  in $0x64, %al
    test $1, %al
    jz 1b
    in $0x60, %al
    cmp %ah, %al
    jne 1b
    ret

.code32
protected:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov MODE_INFO + 0x28, %edi  # PhysBasePtr
    xor %edx, %edx              # y
1:  xor %ecx, %ecx              # x
2:  mov %ecx, %eax              # red: x, green: y, blue: x ^ y
    and $0xff, %eax
    shl $8, %eax
    mov %dl, %al
    shl $8, %eax
    mov %cl, %al
    xor %dl, %al
    mov %eax, (%edi)
    add $4, %edi
    inc %ecx
    cmp $640, %ecx
    jne 2b
    inc %edx
    cmp $480, %edx
    jne 1b
    mov $screen5, %esi
    mov $0x3f8, %dx
3:  lodsb
    test %al, %al
    jz 4f
    out %al, %dx
    jmp 3b
4:  halt

.align 8
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff      # flat 32-bit code
    .quad 0x00cf92000000ffff      # flat 32-bit data
gdt_pointer:
    .word gdt_pointer - gdt - 1
    .long gdt

# Row, column, attribute, length, then the text.
.macro string row, col, attr, text
    .byte \col, \row, \attr
    .byte 9f - 8f
8:  .ascii "\text"
9:
.endm
strings:
    string 1, 2, 0x1f, "Vessel VGA test: text mode 3, 80x25"
    string 3, 2, 0x4e, " Yellow on red "
    string 3, 20, 0x0a, "Green on black"
    string 3, 38, 0x70, "Black on light grey"
    string 5, 0, 0x2f, "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz 0123456789 !?#$%&*()[]{}"
    string 24, 60, 0x1e, "bottom right corner"
    .word 0
strings50:
    string 30, 4, 0x1e, "80x50: the BIOS's 8x8 font"
    string 49, 40, 0x4f, "the last of 50 rows"
    .word 0
strings12:
    string 20, 10, 0x0f, "Mode 12h: 640x480, 16 colours"
    string 24, 10, 0x0e, "drawn by the BIOS into the planes"
    .word 0

screen1: .asciz "SCREEN 1\n"
screen2: .asciz "SCREEN 2\n"
screen3: .asciz "SCREEN 3\n"
screen4: .asciz "SCREEN 4\n"
screen5: .asciz "SCREEN 5\n"
failed: .asciz "VGA FAIL\n"
