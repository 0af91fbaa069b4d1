# The smallest El Torito boot image: loaded by the firmware from a CD (no emulation,
# 4 sectors at 07C0:0000), it says "HI!" on COM1 and halts. It shows the firmware found
# the ATAPI drive, read the boot catalog and the image by int 13h, and jumped to it.
.code16
.globl _start
_start:
    mov $0x3f8, %dx
    mov $'H', %al
    out %al, %dx
    mov $'I', %al
    out %al, %dx
    mov $'!', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
1:  cli
    hlt
    jmp 1b
.org 2048
