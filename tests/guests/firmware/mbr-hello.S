# The smallest MBR boot sector: loaded by the firmware from a disk to 0000:7C00, it says
# "MBR!" on COM1 and halts. It shows the firmware read the disk by int 13h and chose it.
.code16
.globl _start
_start:
    mov $0x3f8, %dx
    mov $'M', %al
    out %al, %dx
    mov $'B', %al
    out %al, %dx
    mov $'R', %al
    out %al, %dx
    mov $'!', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
1:  cli
    hlt
    jmp 1b
.org 510
.word 0xaa55
