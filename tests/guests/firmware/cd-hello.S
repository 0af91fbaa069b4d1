# The smallest El Torito boot image: loaded by the firmware from a CD (no emulation,
# 4 sectors at 07C0:0000), it says "HI!" on COM1 and halts. It shows the firmware found
# the ATAPI drive, read the boot catalog and the image by int 13h, and jumped to it.
.include "say.inc"
.code16
.globl _start
_start:
    say 'H'
    say 'I'
    say '!'
    say '\n'
    halt
.org 2048
