# The smallest MBR boot sector: loaded by the firmware from a disk to 0000:7C00, it says
# "MBR!" on COM1 and halts. It shows the firmware read the disk by int 13h and chose it.
.include "say.inc"
.code16
.globl _start
_start:
    say 'M'
    say 'B'
    say 'R'
    say '!'
    say '\n'
    halt
.org 510
.word 0xaa55
