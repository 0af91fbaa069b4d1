# The test guest booted as a PC boots it: this sector, then the test guest's flat image
# (linked at 1 MiB). From an El Torito CD (no emulation, a load size covering the whole
# image) the firmware has put all of it at 0000:7C00; from an MBR disk only this sector,
# and the rest comes by int 13h extended reads. Then: the firmware's E820 map (int 15h),
# A20, 32-bit protected mode, the image to 1 MiB and its BSS zeroed, and into the guest's
# PVH entry with an hvm_start_info (the command line below; no RSDP address, so the guest
# finds the firmware's in the BIOS area, as an OS does).
#
# Built with --defsym: IMAGE_SECTORS (512-byte sectors of the image), IMAGE_BYTES (the
# image padded to sectors), BSS_END (where the guest's BSS ends), SIGNATURE (the image's
# first four bytes, to see whether the firmware loaded it already).
.include "say.inc"

.set STACK, 0x7000
.set START_INFO, 0x5000
.set MEMMAP, 0x6000
.set LOADED, 0x7e00
.set GUEST, 0x100000
.set CMDLINE_ROOM, 32

.code16
.globl _start
_start:
    start16 STACK
    mov %dl, drive
    cmpl $SIGNATURE, LOADED
    je loaded
    mov $IMAGE_SECTORS, %cx     # an MBR disk: read the rest, 32 sectors at a time
read:
    mov %cx, %ax
    cmp $32, %ax
    jbe 2f
    mov $32, %ax
2:  mov %ax, dap_count
    push %cx
    push %ax
    mov $dap, %si
    mov drive, %dl
    mov $0x42, %ah
    int $0x13
    jc disk_error
    pop %ax
    pop %cx
    sub %ax, %cx
    movzwl %ax, %eax
    addl %eax, dap_lba
    shl $5, %ax                 # 512-byte sectors in 16-byte paragraphs
    addw %ax, dap_segment
    test %cx, %cx
    jnz read
loaded:
    xor %ebx, %ebx              # the E820 map, as PVH entries (24 bytes each)
    mov $MEMMAP, %di
    xor %bp, %bp
e820:
    mov $0xe820, %eax
    mov $0x534d4150, %edx       # "SMAP"
    mov $20, %ecx
    int $0x15
    jc e820_done
    cmp $0x534d4150, %eax
    jne e820_done
    movl $0, 20(%di)
    add $24, %di
    inc %bp
    cmp $64, %bp
    jae e820_done
    test %ebx, %ebx
    jnz e820
e820_done:
    mov %bp, e820_count
    in $0x92, %al               # A20 through the fast gate
    or $2, %al
    and $0xfe, %al
    out %al, $0x92
    lgdtl gdt_descriptor
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $protected
disk_error:
    say 'D'
    say 'I'
    say 'S'
    say 'K'
    say '?'
    halt

.code32
protected:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %ax, %fs
    mov %ax, %gs
    mov $STACK, %esp
    mov $LOADED, %esi           # the image to where it is linked, then its BSS zeroed
    mov $GUEST, %edi
    mov $(IMAGE_BYTES / 4), %ecx
    cld
    rep movsl
    mov $BSS_END, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl
    mov $START_INFO, %edi       # hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h)
    mov $(56 / 4), %ecx
    rep stosl
    movl $0x336ec578, START_INFO         # magic
    movl $1, START_INFO + 4              # version
    movl $cmdline, START_INFO + 24       # cmdline_paddr
    movl $MEMMAP, START_INFO + 40        # memmap_paddr
    movzwl e820_count, %eax
    mov %eax, START_INFO + 48            # memmap_entries
    mov $START_INFO, %ebx
    mov $GUEST, %eax
    jmp *%eax

    .p2align 3
gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    # 0x08: code, 32-bit, flat
    .quad 0x00cf92000000ffff    # 0x10: data, flat
gdt_descriptor:
    .word gdt_descriptor - gdt - 1
    .long gdt
dap:                            # int 13h AH=42h disk address packet
    .byte 16, 0
dap_count:
    .word 0
    .word 0                     # offset
dap_segment:
    .word LOADED >> 4
dap_lba:
    .quad 1
drive:
    .byte 0
e820_count:
    .word 0
cmdline:                        # the builder may put another command line here
    .asciz "test=firmware"
    .fill CMDLINE_ROOM - (. - cmdline), 1, 0
.org 510
.word 0xaa55
