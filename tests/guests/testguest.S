/*
 * Vessel's test guest: a tiny x86-64 program that checks what the VMM gives it and reports
 * over COM1, in lines the integration tests parse.
 *
 * It boots two ways: PVH (32-bit entry at the start of the image, EBX = hvm_start_info,
 * found through the Xen ELF note; QEMU boots it the same way) and the Linux 64-bit boot
 * protocol (entry 0x200 bytes in, RSI = boot_params; the bzImage build wraps the same
 * image in a setup header). A few dozen ring-0 instructions set up paging, GDT, IDT and a
 * TSS whose I/O permission bitmap opens every port; the tests themselves run in ring 3,
 * which is native speed on PVM hosts (see DESIGN.md §3). Interrupt handlers are ring 0 and
 * only count; ring 3 does the device work.
 *
 * The test is chosen on the command line: test=boot (default), smp, echo, powerbutton,
 * reboot-kbd, reboot-cf9, reboot-acpi, triple, ticks, bench, the virtio-* tests, blk-bench,
 * input, input-tablet, gpu, gpu-bench, gpu-anim, fb, atapi, atapi-noswap, atapi-bench,
 * and the tests written in C: blk-hostile, fault-panic, fault-hang, fault-syscall, fault-open (hostile.c), atapi-dma,
 * atapi-dma-1m (atapi_dma.c), firmware (ACPI, SMBIOS, the MP table and the BIOS area as
 * firmware leaves them; bios.c), install and installed (a CD installing itself onto the
 * disk; install.c), ps2 and ps2-mouse (the PS/2 keyboard's and mouse's bytes; ps2.c),
 * journal (ticks kept in memory and on the disk, for snapshots) and snapbench (256 MiB
 * touched, then debug-port beats; journal.c), snapshot (memory, disk, screen, timer and a
 * serial line busy at once; snapshot.c, with virtio.c's driver), migrate, migrate-100,
 * migrate-idle and migrate-storm (memory, disk and clock busy, for live migration;
 * migrate.c).
 *
 * Debug-port milestones (port 0xE9): 1 first instruction, 2 long mode and tables ready,
 * 3 first ring-3 instruction, 4 about to power off.
 */

    .intel_syntax noprefix

    .set DEBUG_PORT, 0xe9
    .set COM1, 0x3f8
    .set LAPIC, 0xfee00000
    .set IOAPIC, 0xfec00000
    .set GED_MMIO, 0xfed00000
    .set AP_TRAMPOLINE, 0x70000
    .set KERNEL_CS, 0x08
    .set KERNEL_DS, 0x10
    .set TSS_SEL, 0x18
    .set USER_DS, 0x2b
    .set USER_CS, 0x33
    .set VEC_SERIAL, 0x30
    .set VEC_GED, 0x31
    .set VEC_VIRTIO, 0x32
    .set VEC_INTX, 0x33
    .set VEC_TIMER, 0x34                /* the local APIC timer (test=snapshot) */
    .set VEC_PIC, 0x40                  /* the 8259s' IRQs 0-15, remapped by test=virtio-rng-pic */
    .set VEC_SPURIOUS, 0xff
    .set TRIPLE_MAGIC, 0x7472697066617574   /* "tripfaut" */

/* From 32-bit protected mode into long mode with our page tables: PAE, CR3, EFER.LME,
 * then paging (Intel SDM Vol. 3A §9.8.5); loads our GDT. The caller far-jumps to 64-bit
 * code. Used by the PVH entry and by the APs' trampoline. */
    .macro enter_long_mode
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset pml4
    mov cr3, eax
    mov ecx, 0xc0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    lgdt [gdt_ptr]
    .endm

/* ------------------------------------------------------------------------------------ */
    .section .text.entry, "ax"
    .code32
    .globl pvh_entry
pvh_entry:
    mov al, 1
    out DEBUG_PORT, al
    mov esp, offset boot_stack_top
    mov dword ptr [boot_proto], 1
    mov dword ptr [boot_ptr], ebx
    mov eax, cr0
    mov dword ptr [entry_cr0], eax
    mov eax, cr4
    mov dword ptr [entry_cr4], eax
    mov ecx, 0xc0000080
    rdmsr
    mov dword ptr [entry_efer], eax
    enter_long_mode
    .byte 0xea                  /* ljmp KERNEL_CS:long_entry */
    .long long_entry
    .word KERNEL_CS

    .org 0x200
    .code64
    .globl startup_64
startup_64:
    mov al, 1
    out DEBUG_PORT, al
    mov dword ptr [boot_proto], 2
    mov qword ptr [boot_ptr], rsi
    mov rax, cr0
    mov qword ptr [entry_cr0], rax
    mov rax, cr4
    mov qword ptr [entry_cr4], rax
    mov ecx, 0xc0000080
    rdmsr
    mov dword ptr [entry_efer], eax
    lgdt [gdt_ptr]
    mov eax, offset pml4
    mov cr3, rax
    push KERNEL_CS
    mov eax, offset long_entry
    push rax
    .byte 0x48, 0xcb            /* retfq: reload CS from our GDT */

long_entry:
    mov ax, KERNEL_DS
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov esp, offset kstack_top
    /* Mask the legacy PICs: interrupts come through the IOAPIC. */
    mov al, 0xff
    out 0x21, al
    out 0xa1, al
    /* TSS: descriptor base, ring-0 stack, then load TR. */
    mov eax, offset tss
    mov edi, offset gdt_tss
    mov word ptr [rdi + 2], ax
    shr eax, 16
    mov byte ptr [rdi + 4], al
    mov byte ptr [rdi + 7], ah
    mov eax, offset kstack_top
    mov qword ptr [tss + 4], rax
    mov ax, TSS_SEL
    ltr ax
    call build_idt
    lidt [idt_ptr]
    call capture_cpuid
    mov al, 2
    out DEBUG_PORT, al
    /* Drop to ring 3 with interrupts enabled. */
    push USER_DS
    mov eax, offset ustack_top
    push rax
    push 0x202
    push USER_CS
    mov eax, offset user_main
    push rax
    iretq

/* Fills the IDT: exceptions 0-31, the serial and GED interrupts, the spurious vector. */
build_idt:
    xor ebx, ebx
1:  mov edi, ebx
    lea esi, [exc_stubs + rbx * 8]
    call set_gate
    inc ebx
    cmp ebx, 32
    jb 1b
    mov edi, VEC_SERIAL
    mov esi, offset irq_serial
    call set_gate
    mov edi, VEC_GED
    mov esi, offset irq_ged
    call set_gate
    mov edi, VEC_VIRTIO
    mov esi, offset irq_virtio
    call set_gate
    mov edi, VEC_INTX
    mov esi, offset irq_intx
    call set_gate
    mov edi, VEC_TIMER
    mov esi, offset irq_timer
    call set_gate
    mov edi, VEC_SPURIOUS
    mov esi, offset irq_spurious
    call set_gate
    mov ebx, VEC_PIC
2:  mov edi, ebx
    mov esi, offset irq_pic
    call set_gate
    inc ebx
    cmp ebx, VEC_PIC + 16
    jb 2b
    ret

/* set_gate(edi = vector, esi = handler): a present, DPL 0, 64-bit interrupt gate. */
set_gate:
    shl edi, 4
    add edi, offset idt
    mov eax, esi
    mov word ptr [rdi], ax
    mov word ptr [rdi + 2], KERNEL_CS
    mov word ptr [rdi + 4], 0x8e00
    shr eax, 16
    mov word ptr [rdi + 6], ax
    mov qword ptr [rdi + 8], 0
    ret

/* Exception stubs, 8 bytes each: push the vector, go to the common handler. */
    .align 8
exc_stubs:
    .set vec, 0
    .rept 32
    .align 8
    push vec
    jmp exc_common
    .set vec, vec + 1
    .endr

exc_common:
    mov dword ptr [quiet], 0
    lea rdi, [rip + s_exception]
    call puts
    mov rdi, [rsp]
    call put_hex
    call space
    mov rdi, [rsp + 8]
    call put_hex
    call space
    mov rdi, [rsp + 16]
    call put_hex
    call newline
    call power_off

irq_serial:
    push rax
    lock inc qword ptr [irq_count_serial]
    jmp eoi
irq_ged:
    push rax
    lock inc qword ptr [irq_count_ged]
    jmp eoi
irq_intx:
    /* Level-triggered: reading the ISR is what lowers the line (virtio 1.2 §4.1.4.5). */
    push rax
    mov rax, [vio_isr]
    mov al, byte ptr [rax]
    test al, al
    jz eoi                              /* not ours (shared line) */
    lock inc qword ptr [irq_count_vio]
    jmp eoi
irq_pic:
    /* INTx through the 8259s: the same ISR check, then a non-specific EOI to both. */
    push rax
    mov rax, [vio_isr]
    mov al, byte ptr [rax]
    test al, al
    jz 1f
    lock inc qword ptr [irq_count_vio]
1:  mov al, 0x20
    out 0xa0, al
    out 0x20, al
    pop rax
    iretq
irq_virtio:
    push rax
    lock inc qword ptr [irq_count_vio]
    jmp eoi
irq_timer:
    /* Counted; and with a timer_period set, armed again that many TSC ticks from now in
     * TSC-deadline mode (Intel SDM Vol. 3A §11.5.4.1). Ring 3 starts the chain with a
     * one-shot count (it cannot write the MSR), and from then on a timer is always armed. */
    push rax
    lock inc qword ptr [irq_count_timer]
    cmp qword ptr [timer_period], 0
    je eoi
    push rcx
    push rdx
    mov eax, LAPIC + 0x320
    mov dword ptr [rax], VEC_TIMER | (2 << 17)
    rdtsc
    shl rdx, 32
    or rax, rdx
    add rax, [timer_period]
    mov rdx, rax
    shr rdx, 32
    mov ecx, 0x6e0                      /* IA32_TSC_DEADLINE */
    wrmsr
    pop rdx
    pop rcx
eoi:
    mov eax, LAPIC + 0xb0
    mov dword ptr [rax], 0
    pop rax
    iretq
irq_spurious:
    iretq

/* ------------------------------------------------------------------------------------ */
/* Ring 3. */

user_main:
    mov al, 3
    out DEBUG_PORT, al
    mov dword ptr [quiet], 1
    call read_boot_info
    call walk_acpi
    mov dword ptr [quiet], 0
    /* The banner goes out by string I/O (one exit, many bytes). */
    lea rsi, [rip + s_banner]
    mov ecx, offset s_banner_end - s_banner
    mov dx, COM1
    rep outsb
    lea rsi, [rip + tests]
2:  mov rdi, [rsi]
    test rdi, rdi
    jz test_boot                /* no match: the boot report */
    push rsi
    call arg_is
    pop rsi
    test eax, eax
    jnz 3f
    add rsi, 16
    jmp 2b
3:  jmp qword ptr [rsi + 8]

/* arg_is(rdi = name): 1 if the command line has test=<name> as a whole word. */
arg_is:
    mov r8, rdi
    mov rsi, [cmdline]
    test rsi, rsi
    jz 9f
1:  cmp byte ptr [rsi], 0
    je 9f
    cmp dword ptr [rsi], 0x74736574     /* "test" */
    jne 5f
    cmp byte ptr [rsi + 4], '='
    jne 5f
    lea rdx, [rsi + 5]
    mov rcx, r8
2:  mov al, byte ptr [rcx]
    test al, al
    jz 3f
    cmp al, byte ptr [rdx]
    jne 5f
    inc rcx
    inc rdx
    jmp 2b
3:  mov al, byte ptr [rdx]             /* the word must end here */
    cmp al, ' '
    je 8f
    test al, al
    jz 8f
5:  inc rsi
    jmp 1b
8:  mov eax, 1
    ret
9:  xor eax, eax
    ret

/* --- boot information --- */

/* Normalises what the boot protocol handed over into cmdline, rsdp_addr, initrd_*,
 * and prints it (unless quiet). */
read_boot_info:
    push rbx
    push r12
    push r13
    mov rbx, [boot_ptr]
    cmp dword ptr [boot_proto], 1
    jne linux64_info
    /* PVH hvm_start_info */
    lea rdi, [rip + s_proto_pvh]
    call puts
    call print_entry
    mov eax, 0
    cmp dword ptr [rbx], 0x336ec578
    sete al
    call print_magic
    mov rax, [rbx + 24]
    mov [cmdline], rax
    mov rax, [rbx + 32]
    mov [rsdp_addr], rax
    cmp dword ptr [rbx + 12], 0
    je 1f
    mov rax, [rbx + 16]
    mov rcx, [rax]
    mov [initrd_addr], rcx
    mov rcx, [rax + 8]
    mov [initrd_size], rcx
1:  mov r12, [rbx + 40]                 /* memmap */
    mov r13d, dword ptr [rbx + 48]      /* entries */
2:  test r13d, r13d
    jz print_common_info
    mov rdi, [r12]
    mov rsi, [r12 + 8]
    mov edx, dword ptr [r12 + 16]
    call print_e820
    add r12, 24
    dec r13d
    jmp 2b

linux64_info:
    lea rdi, [rip + s_proto_linux]
    call puts
    call print_entry
    xor eax, eax
    cmp dword ptr [rbx + 0x202], 0x53726448
    jne 1f
    cmp word ptr [rbx + 0x1fe], 0xaa55
    jne 1f
    mov eax, 1
1:  call print_magic
    mov eax, dword ptr [rbx + 0x228]
    mov ecx, dword ptr [rbx + 0xc8]
    shl rcx, 32
    or rax, rcx
    mov [cmdline], rax
    mov rax, [rbx + 0x70]
    mov [rsdp_addr], rax
    mov eax, dword ptr [rbx + 0x218]
    mov ecx, dword ptr [rbx + 0xc0]
    shl rcx, 32
    or rax, rcx
    mov [initrd_addr], rax
    mov eax, dword ptr [rbx + 0x21c]
    mov ecx, dword ptr [rbx + 0xc4]
    shl rcx, 32
    or rax, rcx
    mov [initrd_size], rax
    lea r12, [rbx + 0x2d0]
    movzx r13d, byte ptr [rbx + 0x1e8]
2:  test r13d, r13d
    jz print_common_info
    mov rdi, [r12]
    mov rsi, [r12 + 8]
    mov edx, dword ptr [r12 + 16]
    call print_e820
    add r12, 20
    dec r13d
    jmp 2b

print_common_info:
    lea rdi, [rip + s_cmdline]
    call puts
    mov rdi, [cmdline]
    test rdi, rdi
    jz 1f
    call puts
1:  call newline
    lea rdi, [rip + s_initrd]
    call puts
    mov rdi, [initrd_addr]
    call put_hex
    call space
    mov rdi, [initrd_size]
    call put_hex
    call space
    mov rdi, [initrd_addr]
    mov rsi, [initrd_size]
    call fnv1a
    mov rdi, rax
    call put_hex
    call newline
    pop r13
    pop r12
    pop rbx
    ret

print_entry:
    lea rdi, [rip + s_bootptr]
    call puts
    mov rdi, [boot_ptr]
    call put_hex
    lea rdi, [rip + s_cr0]
    call puts
    mov rdi, [entry_cr0]
    call put_hex
    lea rdi, [rip + s_cr4]
    call puts
    mov rdi, [entry_cr4]
    call put_hex
    lea rdi, [rip + s_efer]
    call puts
    mov edi, dword ptr [entry_efer]
    call put_hex
    jmp newline

/* print_magic(eax = ok?) */
print_magic:
    push rax
    lea rdi, [rip + s_magic]
    call puts
    pop rax
    jmp print_ok

/* print_e820(rdi = addr, rsi = size, edx = type) */
print_e820:
    push rdi
    push rsi
    push rdx
    lea rdi, [rip + s_e820]
    call puts
    mov rdi, [rsp + 16]
    call put_hex
    call space
    mov rdi, [rsp + 8]
    call put_hex
    call space
    mov rdi, [rsp]
    call put_hex
    call newline
    add rsp, 24
    ret

/* fnv1a(rdi = addr, rsi = len) -> eax: FNV-1a 32 of the bytes. */
fnv1a:
    mov eax, 0x811c9dc5
1:  test rsi, rsi
    jz 2f
    movzx ecx, byte ptr [rdi]
    xor eax, ecx
    imul eax, eax, 0x01000193
    inc rdi
    dec rsi
    jmp 1b
2:  ret

/* --- ACPI --- */

/* Finds the RSDP (from the boot protocol, else by scanning the BIOS area), checks every
 * table's checksum and reads what the tests use: the sleep and reset registers, _S5 and
 * the local APICs. */
walk_acpi:
    push rbx
    push r12
    push r13
    push r14
    mov qword ptr [cpu_count], 0
    mov rbx, [rsdp_addr]
    test rbx, rbx
    jnz 2f
    mov rbx, 0xe0000                    /* legacy scan, 16-byte steps */
1:  mov rax, 0x2052545020445352         /* "RSD PTR " */
    cmp qword ptr [rbx], rax
    je 2f
    add rbx, 16
    cmp rbx, 0x100000
    jb 1b
    lea rdi, [rip + s_no_rsdp]
    call puts
    jmp 9f
2:  mov [rsdp_addr], rbx
    lea rdi, [rip + s_rsdp]
    call puts
    mov rdi, rbx
    call put_hex
    /* checksum of the first 20 bytes, and of all 36 for revision 2+ */
    mov rdi, rbx
    mov esi, 20
    call sum_bytes
    mov r12d, eax
    cmp byte ptr [rbx + 15], 2
    jb 3f
    mov rdi, rbx
    mov esi, 36
    call sum_bytes
    or r12d, eax
3:  xor eax, eax
    test r12b, r12b
    sete al
    call print_ok
    /* XSDT (8-byte entries) for revision 2+, else RSDT (4-byte entries) */
    mov r14d, 8
    mov r12, [rbx + 24]
    cmp byte ptr [rbx + 15], 2
    jb 4f
    test r12, r12
    jnz 5f
4:  mov r14d, 4
    mov r12d, dword ptr [rbx + 16]
5:  mov rdi, r12
    call check_table
    mov r13d, dword ptr [r12 + 4]
    sub r13d, 36
    add r12, 36
6:  cmp r13d, 0
    jle 9f
    mov rdi, [r12]
    cmp r14d, 8
    je 7f
    mov edi, edi
7:  call table_found
    add r12, r14
    sub r13d, r14d
    jmp 6b
9:  pop r14
    pop r13
    pop r12
    pop rbx
    ret

/* table_found(rdi = table): checks it and reads the FADT and MADT. */
table_found:
    push rbx
    mov rbx, rdi
    call check_table
    cmp dword ptr [rbx], 0x50434146     /* "FACP" */
    je fadt_found
    cmp dword ptr [rbx], 0x43495041     /* "APIC" */
    je madt_found
    pop rbx
    ret

fadt_found:
    mov ecx, dword ptr [rbx + 4]        /* length */
    mov edi, dword ptr [rbx + 40]       /* DSDT */
    cmp ecx, 148
    jb 1f
    mov rax, [rbx + 140]                /* X_DSDT */
    test rax, rax
    jz 1f
    mov rdi, rax
1:  push rcx
    push rdi
    call check_table
    pop rdi
    call find_s5
    pop rcx
    mov eax, dword ptr [rbx + 64]       /* PM1a_CNT_BLK */
    mov [pm1a_cnt], rax
    cmp ecx, 129
    jb 2f
    test byte ptr [rbx + 113], 0x04     /* flags: RESET_REG_SUP (bit 10) */
    jz 2f
    mov rax, [rbx + 120]                /* RESET_REG address */
    mov [reset_port], rax
    movzx eax, byte ptr [rbx + 128]
    mov [reset_value], rax
2:  cmp ecx, 256
    jb 3f
    mov rax, [rbx + 248]                /* SLEEP_CONTROL_REG address */
    mov [sleep_port], rax
3:  lea rdi, [rip + s_sleepctl]
    call puts
    mov rdi, [sleep_port]
    call put_hex
    call space
    mov rdi, [pm1a_cnt]
    call put_hex
    call newline
    lea rdi, [rip + s_resetreg]
    call puts
    mov rdi, [reset_port]
    call put_hex
    call space
    mov rdi, [reset_value]
    call put_hex
    call newline
    pop rbx
    ret

/* find_s5(rdi = DSDT): the first element of Name(_S5_, Package(){...}). */
find_s5:
    mov ecx, dword ptr [rdi + 4]
    lea rdx, [rdi + rcx - 8]
1:  cmp rdi, rdx
    jae 8f
    cmp dword ptr [rdi], 0x5f35535f     /* "_S5_" */
    je 2f
    inc rdi
    jmp 1b
2:  cmp byte ptr [rdi + 4], 0x12        /* PackageOp */
    jne 8f
    movzx eax, byte ptr [rdi + 7]       /* after PkgLength (1 byte) and NumElements */
    cmp al, 0x0a                        /* BytePrefix */
    jne 3f
    movzx eax, byte ptr [rdi + 8]
    jmp 4f
3:  cmp al, 0x01                        /* ZeroOp = 0, OneOp = 1 */
    jbe 4f
    jmp 8f
4:  mov [s5_type], rax
    lea rdi, [rip + s_s5]
    call puts
    mov rdi, [s5_type]
    call put_hex
    jmp newline
8:  lea rdi, [rip + s_no_s5]
    jmp puts

madt_found:
    mov ecx, dword ptr [rbx + 4]
    lea rsi, [rbx + 44]
    add rcx, rbx
1:  cmp rsi, rcx
    jae 3f
    cmp byte ptr [rsi], 0               /* processor local APIC */
    jne 2f
    test byte ptr [rsi + 4], 1          /* enabled */
    jz 2f
    mov eax, dword ptr [cpu_count]
    cmp eax, 64
    jae 2f
    movzx edx, byte ptr [rsi + 3]
    lea rdi, [rip + apic_ids]
    mov byte ptr [rdi + rax], dl
    inc dword ptr [cpu_count]
2:  movzx eax, byte ptr [rsi + 1]
    test eax, eax
    jz 3f
    add rsi, rax
    jmp 1b
3:  lea rdi, [rip + s_cpus]
    call puts
    mov edi, dword ptr [cpu_count]
    call put_hex
    call newline
    pop rbx
    ret

/* check_table(rdi = table): prints "ACPI <sig> <addr> <len> ok|bad". */
check_table:
    push rbx
    mov rbx, rdi
    lea rdi, [rip + s_acpi]
    call puts
    mov eax, dword ptr [rbx]
    mov dword ptr [sigbuf], eax
    lea rdi, [rip + sigbuf]
    call puts
    call space
    mov rdi, rbx
    call put_hex
    call space
    mov edi, dword ptr [rbx + 4]
    call put_hex
    mov rdi, rbx
    mov esi, dword ptr [rbx + 4]
    xor eax, eax
    cmp esi, 0x100000                   /* a sane table is smaller than 1 MiB */
    ja 1f
    call sum_bytes
    test al, al
    sete al
    movzx eax, al
1:  pop rbx
    jmp print_ok

/* sum_bytes(rdi, esi = len) -> al */
sum_bytes:
    xor eax, eax
1:  test esi, esi
    jz 2f
    add al, byte ptr [rdi]
    inc rdi
    dec esi
    jmp 1b
2:  ret

/* --- CPUID --- */

/* Asks CPUID the leaves the boot report prints, in ring 0, and keeps the answers. Ring 0
 * because there KVM answers with the vCPU's CPUID as the VMM set it; on AMD hosts PVM does
 * not intercept CPUID in ring 3, which then returns the host's own values (DESIGN.md §3). */
capture_cpuid:
    push rbx
    mov eax, 1
    cpuid
    mov dword ptr [cpuid1_ebx], ebx
    mov dword ptr [cpuid1_ecx], ecx
    mov eax, 0x40000000
    cpuid
    mov dword ptr [hv_max_leaf], eax
    mov dword ptr [hv_sig], ebx
    mov dword ptr [hv_sig + 4], ecx
    mov dword ptr [hv_sig + 8], edx
    mov byte ptr [hv_sig + 12], 0
    mov eax, 0x40000001
    cpuid
    mov dword ptr [hv_features], eax
    pop rbx
    ret

/* Prints "CPUID1 <ebx> <ecx>" (APIC id, hypervisor and VMX bits) and
 * "HYPERVISOR <signature> <max leaf> <features>" from the 0x40000000 leaves, as
 * capture_cpuid found them in ring 0. */
report_cpuid:
    lea rdi, [rip + s_cpuid1]
    call puts
    mov edi, dword ptr [cpuid1_ebx]
    call put_hex
    call space
    mov edi, dword ptr [cpuid1_ecx]
    call put_hex
    call newline
    lea rdi, [rip + s_hypervisor]
    call puts
    lea rdi, [rip + hv_sig]
    call puts
    call space
    mov edi, dword ptr [hv_max_leaf]
    call put_hex
    call space
    mov edi, dword ptr [hv_features]
    call put_hex
    jmp newline

/* Prints "RTC <century> <year> <month> <day>" as the CMOS clock reads them (BCD). */
report_rtc:
    push rbx
    lea rdi, [rip + s_rtc]
    call puts
    lea rbx, [rip + rtc_regs]
1:  movzx eax, byte ptr [rbx]
    cmp al, 0xff
    je 2f
    out 0x70, al
    in al, 0x71
    movzx edi, al
    call put_hex
    call space
    inc rbx
    jmp 1b
2:  pop rbx
    jmp newline

/* --- PCI (configuration mechanism #1, from ring 3) --- */

/* pci_read32(edi = slot, esi = register) -> eax */
pci_read32:
    mov eax, edi
    shl eax, 11
    or eax, esi
    or eax, 0x80000000
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    in eax, dx
    ret

/* pci_write32(edi = slot, esi = register, r8d = value) */
pci_write32:
    mov eax, edi
    shl eax, 11
    or eax, esi
    or eax, 0x80000000
    mov dx, 0xcf8
    out dx, eax
    mov dx, 0xcfc
    mov eax, r8d
    out dx, eax
    ret

/* bar_address(edi = slot, esi = BAR index) -> rax: the memory address it decodes. */
bar_address:
    push rbx
    push r12
    mov r12d, edi
    lea esi, [rsi * 4 + 0x10]
    mov ebx, esi
    call pci_read32
    mov ecx, eax
    and eax, 0xfffffff0
    and ecx, 0x6
    cmp ecx, 0x4                        /* 64-bit BAR: the next one is the high half */
    jne 1f
    push rax
    mov edi, r12d
    lea esi, [rbx + 4]
    call pci_read32
    mov ecx, eax
    pop rax
    shl rcx, 32
    or rax, rcx
1:  pop r12
    pop rbx
    ret

/* --- virtio over the modern PCI transport, with MSI-X (virtio 1.2 §4.1) --- */

/* virtio_find(edi = PCI device id): scans bus 0 (printing "PCI <slot> <ids>" lines), finds
 * vendor 1af4 with that device id, turns on memory decode and bus mastering and reads
 * where its structures are. Fails the test if there is none. */
virtio_find:
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov ebx, edi
    shl ebx, 16
    or ebx, 0x1af4
    mov qword ptr [vio_slot], -1
    mov qword ptr [vio_nmatch], 0
    xor r12d, r12d
1:  mov edi, r12d
    xor esi, esi
    call pci_read32
    cmp ax, 0xffff
    je 2f
    mov r13d, eax
    lea rdi, [rip + s_pci]
    call puts
    mov edi, r12d
    call put_hex
    call space
    mov edi, r13d
    call put_hex
    call newline
    cmp r13d, ebx
    jne 2f
    mov rax, [vio_nmatch]
    mov [vio_matches + rax * 8], r12
    inc qword ptr [vio_nmatch]
2:  inc r12d
    cmp r12d, 32
    jb 1b
    /* the last match, or vio_skip_last before it */
    mov rax, [vio_nmatch]
    sub rax, 1
    sub rax, [vio_skip_last]
    js virtio_fail
    mov r12, [vio_matches + rax * 8]
    mov [vio_slot], r12
    mov edi, r12d
    mov esi, 0x04
    call pci_read32
    or eax, 0x6                         /* memory decode, bus master */
    mov r8d, eax
    mov edi, r12d
    mov esi, 0x04
    call pci_write32
    cmp qword ptr [vio_move_to], 0
    je 21f
    /* Move every memory BAR as an OS may: decode off, new addresses, decode on. The
     * device must follow (its registers and its notification doorbells). */
    mov edi, r12d
    mov esi, 0x04
    call pci_read32
    and eax, ~0x2
    mov r8d, eax
    mov edi, r12d
    mov esi, 0x04
    call pci_write32
    mov r13d, 0x10
22: mov edi, r12d
    mov esi, r13d
    call pci_read32
    test al, 1                          /* I/O BAR: leave it */
    jnz 24f
    mov r14d, eax
    mov r8d, [vio_move_to]
    mov edi, r12d
    mov esi, r13d
    call pci_write32
    add qword ptr [vio_move_to], 0x100000
    and r14d, 0x6
    cmp r14d, 0x4                       /* 64-bit: the high half goes to 0 */
    jne 24f
    add r13d, 4
    xor r8d, r8d
    mov edi, r12d
    mov esi, r13d
    call pci_write32
24: add r13d, 4
    cmp r13d, 0x28
    jb 22b
    mov edi, r12d
    mov esi, 0x04
    call pci_read32
    or eax, 0x6
    mov r8d, eax
    mov edi, r12d
    mov esi, 0x04
    call pci_write32
    lea rdi, [rip + s_moved]
    call puts
21: mov edi, r12d
    mov esi, 0x34
    call pci_read32
    movzx r13d, al
3:  cmp r13d, 0x40
    jb 6f
    mov edi, r12d
    mov esi, r13d
    call pci_read32
    mov r14d, eax                       /* id, next, cap_len, cfg_type */
    cmp r14b, 0x11
    jne 4f
    mov [vio_msix_cap], r13
    mov edi, r12d
    lea esi, [r13 + 4]
    call pci_read32                     /* table offset | BIR */
    mov r15d, eax
    mov edi, r12d
    mov esi, r15d
    and esi, 7
    call bar_address
    and r15d, 0xfffffff8
    add rax, r15
    mov [vio_msix_table], rax
    jmp 5f
4:  cmp r14b, 0x09
    jne 5f
    mov edi, r12d
    lea esi, [r13 + 4]
    call pci_read32                     /* bar (low byte) */
    movzx esi, al
    mov edi, r12d
    call bar_address
    mov r15, rax
    mov edi, r12d
    lea esi, [r13 + 8]
    call pci_read32                     /* offset within the BAR */
    add r15, rax
    mov eax, r14d
    shr eax, 24                         /* cfg_type */
    cmp eax, 1
    jne 41f
    mov [vio_common], r15
    jmp 5f
41: cmp eax, 3
    jne 43f
    mov [vio_isr], r15
    jmp 5f
43: cmp eax, 4
    jne 42f
    mov [vio_device], r15
    jmp 5f
42: cmp eax, 2
    jne 5f
    mov [vio_notify], r15
    mov edi, r12d
    lea esi, [r13 + 16]
    call pci_read32
    mov [vio_notify_mul], rax
5:  mov eax, r14d
    shr eax, 8
    movzx r13d, al                      /* next */
    jmp 3b
6:  cmp qword ptr [vio_common], 0
    je virtio_fail
    cmp qword ptr [vio_msix_table], 0
    je virtio_fail
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    ret

/* virtio_start: MSI-X vector 0 -> VEC_VIRTIO, then the initialisation of §3.1.1 with only
 * VERSION_1, and queue 0 (8 entries) on MSI-X vector 0. */
virtio_start:
    push rbx
    cmp qword ptr [vio_use_msix], 0
    jne 7f
    /* INTx: route the Interrupt Line's GSI, level-triggered and active-low, on the IOAPIC
     * or (test=virtio-rng-pic) that IRQ on the 8259s. */
    mov edi, [vio_slot]
    mov esi, 0x3c
    call pci_read32
    movzx edi, al
    cmp qword ptr [vio_use_pic], 0
    je 6f
    call pic_route
    jmp 8f
6:  mov esi, VEC_INTX | (1 << 13) | (1 << 15)
    call ioapic_route
    jmp 8f
7:  mov rbx, [vio_msix_table]
    mov dword ptr [rbx], 0xfee00000
    mov dword ptr [rbx + 4], 0
    mov dword ptr [rbx + 8], VEC_VIRTIO
    mov dword ptr [rbx + 12], 0
    mov edi, [vio_slot]
    mov esi, [vio_msix_cap]
    call pci_read32
    or eax, 0x80000000                  /* Message Control bit 15: enable */
    and eax, 0xbfffffff                 /* function mask off */
    mov r8d, eax
    mov edi, [vio_slot]
    mov esi, [vio_msix_cap]
    call pci_write32
8:  mov rbx, [vio_common]
    mov byte ptr [rbx + 0x14], 0        /* reset */
    mov byte ptr [rbx + 0x14], 1        /* ACKNOWLEDGE */
    mov byte ptr [rbx + 0x14], 3        /* DRIVER */
    mov dword ptr [rbx + 0x00], 0
    mov eax, dword ptr [rbx + 0x04]
    mov [vio_features], rax             /* device features 0-31 */
    mov dword ptr [rbx + 0x00], 1
    test dword ptr [rbx + 0x04], 1      /* VIRTIO_F_VERSION_1 */
    jz virtio_fail
    mov dword ptr [rbx + 0x08], 0
    mov dword ptr [rbx + 0x0c], 0
    mov dword ptr [rbx + 0x08], 1
    mov dword ptr [rbx + 0x0c], 1
    mov byte ptr [rbx + 0x14], 0x0b     /* FEATURES_OK */
    test byte ptr [rbx + 0x14], 0x08
    jz virtio_fail
    xor edi, edi
1:  push rdi
    call virtio_setup_queue
    pop rdi
    inc edi
    cmp edi, [vio_nqueues]
    jb 1b
    mov rbx, [vio_common]
    mov byte ptr [rbx + 0x14], 0x0f     /* DRIVER_OK */
    pop rbx
    ret

/* Queue q's rings live at vq_rings + q * 4 KiB: descriptors at +0, the available ring at
 * +0x400, the used ring at +0x800; 8 entries each. */
    .set RING_AVAIL, 0x400
    .set RING_USED, 0x800

/* virtio_setup_queue(edi = q): size 8, MSI-X vector 0 (or none with INTx), rings, enable. */
virtio_setup_queue:
    push rbx
    push r12
    mov r12d, edi
    mov rbx, [vio_common]
    mov word ptr [rbx + 0x16], r12w     /* queue_select */
    cmp word ptr [rbx + 0x18], 8
    jb virtio_fail
    mov word ptr [rbx + 0x18], 8
    xor eax, eax                        /* MSI-X vector 0, or none with INTx */
    cmp qword ptr [vio_use_msix], 0
    jne 9f
    mov eax, 0xffff
9:  mov word ptr [rbx + 0x1a], ax
    cmp word ptr [rbx + 0x1a], ax
    jne virtio_fail
    mov eax, r12d
    shl eax, 12
    add eax, offset vq_rings
    mov dword ptr [rbx + 0x20], eax
    mov dword ptr [rbx + 0x24], 0
    add eax, RING_AVAIL
    mov dword ptr [rbx + 0x28], eax
    mov dword ptr [rbx + 0x2c], 0
    add eax, RING_USED - RING_AVAIL
    mov dword ptr [rbx + 0x30], eax
    mov dword ptr [rbx + 0x34], 0
    mov word ptr [rbx + 0x1c], 1        /* queue_enable */
    cmp word ptr [rbx + 0x1c], 1
    jne virtio_fail
    movzx eax, word ptr [rbx + 0x1e]    /* queue_notify_off */
    imul eax, dword ptr [vio_notify_mul]
    add rax, [vio_notify]
    lea rcx, [rip + vio_qnotify]
    mov [rcx + r12 * 8], rax
    pop r12
    pop rbx
    ret

/* ring_base -> rax: the rings of the current queue [vio_q]. */
ring_base:
    mov rax, [vio_q]
    shl rax, 12
    add rax, offset vq_rings
    ret

/* set_desc(edi = index, rsi = address, edx = length, ecx = flags): descriptor `index` of
 * the current queue; it chains to `index + 1` when flags has NEXT (1). */
set_desc:
    call ring_base
    lea r9d, [rdi + 1]
    shl edi, 4
    add rdi, rax
    mov qword ptr [rdi], rsi
    mov dword ptr [rdi + 8], edx
    mov word ptr [rdi + 12], cx
    mov word ptr [rdi + 14], r9w
    ret

/* virtio_post: makes descriptor 0 of the current queue available and notifies it. */
virtio_post:
    push rbx
    mov rcx, [vio_q]
    lea rdx, [rip + vio_avail]
    mov rax, [rdx + rcx * 8]
    inc rax
    mov [rdx + rcx * 8], rax
    mov rsi, [irq_count_vio]
    lea rdx, [rip + vio_irqsnap]
    mov [rdx + rcx * 8], rsi
    mov rbx, rax
    call ring_base
    lea ecx, [rbx - 1]
    and ecx, 7
    mov word ptr [rax + RING_AVAIL + 4 + rcx * 2], 0  /* ring[idx % 8] = descriptor 0 */
    mov word ptr [rax + RING_AVAIL + 2], bx           /* publish avail->idx */
    mov rcx, [vio_q]
    lea rdx, [rip + vio_qnotify]
    mov rdx, [rdx + rcx * 8]
    mov word ptr [rdx], cx              /* notify: the queue's index */
    pop rbx
    ret

/* virtio_wait: waits until the current queue's device has used everything posted and an
 * interrupt came after the post; returns the last used length in eax. */
virtio_wait:
    push rbx
    push r12
    push r13
    mov r13, [vio_q]
    lea rax, [rip + vio_irqsnap]
    mov r12, [rax + r13 * 8]
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r8, rax
1:  call ring_base
    mov rbx, rax
    movzx eax, word ptr [rbx + RING_USED + 2]   /* used->idx */
    lea rdx, [rip + vio_avail]
    cmp rax, [rdx + r13 * 8]
    jne 2f
    cmp [irq_count_vio], r12
    jne 3f
2:  pause
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r8
    mov rcx, 30000000000
    cmp rax, rcx
    jb 1b
    jmp virtio_fail
3:  dec eax
    and eax, 7
    lea rax, [rbx + RING_USED + 4 + rax * 8]
    cmp dword ptr [rax], 0              /* id: descriptor 0 */
    jne virtio_fail
    mov eax, dword ptr [rax + 4]        /* len */
    pop r13
    pop r12
    pop rbx
    ret

/* virtio_submit: post on the current queue and wait for it. */
virtio_submit:
    call virtio_post
    jmp virtio_wait

virtio_fail:
    lea rdi, [rip + s_virtio_fail]
    call puts
    mov rdi, [vio_common]
    call put_hex
    call newline
    call power_off

/* test=virtio-net: MAC and link from the device config, then an ARP request for 10.0.2.2
 * on the transmit queue and the answer on the receive queue ("NET ARP <op> <ip> <mac>").
 * passt, and QEMU's slirp, answer for the gateway. */
test_net:
    push rbx
    push r12
    call lapic_enable
    mov qword ptr [vio_nqueues], 2
    mov edi, 0x1041
    call virtio_find
    call virtio_start
    mov rbx, [vio_device]
    mov eax, dword ptr [rbx]
    mov dword ptr [net_mac], eax
    movzx eax, word ptr [rbx + 4]
    mov word ptr [net_mac + 4], ax
    lea rdi, [rip + s_net_mac]
    call puts
    mov rdi, [net_mac]
    bswap rdi
    shr rdi, 16                         /* the six bytes in order */
    call put_hex
    call newline
    lea rdi, [rip + s_net_status]
    call puts
    movzx edi, word ptr [rbx + 6]
    call put_hex
    call newline
    /* the ARP request: template, then our MAC as source and sender */
    lea rsi, [rip + arp_template]
    mov rdi, offset net_tx + 12
    mov ecx, 42
    rep movsb
    mov eax, dword ptr [net_mac]
    mov dword ptr [net_tx + 12 + 6], eax
    mov dword ptr [net_tx + 12 + 22], eax
    movzx eax, word ptr [net_mac + 4]
    mov word ptr [net_tx + 12 + 10], ax
    mov word ptr [net_tx + 12 + 26], ax
    /* a receive buffer first, so the answer has somewhere to go */
    mov qword ptr [vio_q], 0
    call net_post_rx
    mov qword ptr [vio_q], 1
    xor edi, edi
    mov rsi, offset net_tx
    mov edx, 12 + 42
    xor ecx, ecx
    call set_desc
    call virtio_submit
    lea rdi, [rip + s_net_tx]
    call print_status
    /* frames until an ARP reply (a few others, like IPv6 router adverts, may come first) */
    mov r12d, 8
1:  mov qword ptr [vio_q], 0
    call virtio_wait
    mov ebx, eax
    cmp word ptr [net_rx + 12 + 12], 0x0608         /* ethertype ARP (big-endian) */
    jne 2f
    cmp word ptr [net_rx + 12 + 20], 0x0200         /* op: reply */
    je 3f
2:  dec r12d
    jz virtio_fail
    call net_post_rx
    jmp 1b
3:  lea rdi, [rip + s_net_rx]
    mov eax, ebx
    call print_status
    lea rdi, [rip + s_net_arp]
    call puts
    movzx edi, word ptr [net_rx + 12 + 20]
    rol di, 8                           /* network byte order */
    call put_hex
    call space
    mov edi, dword ptr [net_rx + 12 + 28]           /* sender IP */
    bswap edi
    call put_hex
    call space
    mov rdi, qword ptr [net_rx + 12 + 22]           /* sender MAC */
    bswap rdi
    shr rdi, 16
    call put_hex
    call newline
    pop r12
    pop rbx
    call power_off

/* Posts net_rx (2 KiB, device-writable) on the receive queue. */
net_post_rx:
    mov qword ptr [vio_q], 0
    mov word ptr [net_rx + 12 + 12], 0
    xor edi, edi
    mov rsi, offset net_rx
    mov edx, 2048
    mov ecx, 2
    call set_desc
    jmp virtio_post

/* test=blk-bench: virtio-blk throughput at queue depth 1, polling the used ring (the
 * driver sets VIRTQ_AVAIL_F_NO_INTERRUPT). Each phase is bracketed by debug-port
 * milestones the host timestamps: 0x10/0x11 sequential write, 0x12/0x13 sequential read
 * (256 KiB requests over the first 64 MiB), 0x14/0x15 random 4 KiB reads, 0x16/0x17
 * random 4 KiB writes (4096 each, over the first 64 MiB), 0x18/0x19 and 0x1a/0x1b
 * sequential write and read in 1 MiB requests over the same 64 MiB, and 0x1c/0x1d and
 * 0x1e/0x1f the same with two requests in flight. */
    .set BENCH_SEQ_BYTES, 262144
    .set BENCH_SEQ_COUNT, 256
    .set BENCH_RAND_COUNT, 4096
    .set BENCH_SPAN_SECTORS, 131072
    .set BENCH_BIG_BYTES, 1048576
    .set BENCH_BIG_COUNT, 64
test_blk_bench:
    call lapic_enable
    mov edi, 0x1042
    call virtio_find
    call virtio_start
    mov qword ptr [vio_q], 0
    call ring_base
    mov word ptr [rax + RING_AVAIL], 1  /* VIRTQ_AVAIL_F_NO_INTERRUPT */
    /* The data to write, as a real writer has it: the buffers (two for two in flight)
     * are written by the guest before the device reads them. */
    mov rdi, offset bench_buf
    mov ecx, (2 << 20) / 8
    mov rax, 0x5a5a5a5a5a5a5a5a
    rep stosq
    mov qword ptr [bench_lcg], 12345
    mov edi, 0x10                       /* 256 KiB (512 sectors) writes, then reads */
    mov esi, 9
    mov edx, BENCH_SEQ_BYTES
    mov ecx, BENCH_SEQ_COUNT
    call bench_sequential
    mov al, 0x14
    out DEBUG_PORT, al
    xor r12d, r12d
3:  call bench_random_sector
    xor edi, edi
    mov esi, eax
    mov edx, 4096
    call bench_request
    inc r12d
    cmp r12d, BENCH_RAND_COUNT
    jb 3b
    mov al, 0x15
    out DEBUG_PORT, al
    mov al, 0x16
    out DEBUG_PORT, al
    xor r12d, r12d
4:  call bench_random_sector
    mov edi, 1
    mov esi, eax
    mov edx, 4096
    call bench_request
    inc r12d
    cmp r12d, BENCH_RAND_COUNT
    jb 4b
    mov al, 0x17
    out DEBUG_PORT, al
    mov edi, 0x18                       /* again in 1 MiB (2048-sector) requests */
    mov esi, 11
    mov edx, BENCH_BIG_BYTES
    mov ecx, BENCH_BIG_COUNT
    call bench_sequential
    mov edi, 0x1c                       /* 1 MiB requests, two in flight */
    xor esi, esi                        /* OUT */
    call bench_qd2
    mov edi, 0x1e
    mov esi, 1                          /* IN */
    call bench_qd2
    lea rdi, [rip + s_bench_done]
    call puts
    call power_off

/* bench_qd2(edi = first milestone, esi = 1 for reads): BENCH_BIG_COUNT 1 MiB requests over
 * the first 64 MiB with two in flight, as a driver's readahead or writeback keeps them:
 * descriptors 0-2 and 3-5 are the two slots; a slot is posted again as soon as it comes
 * back. Milestones edi and edi+1 bracket it. */
bench_qd2:
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov ebx, edi
    mov r15d, esi
    mov eax, ebx
    out DEBUG_PORT, al
    xor r12d, r12d                      /* next request */
    xor r13d, r13d                      /* requests completed */
    call ring_base
    movzx r14d, word ptr [rax + RING_USED + 2]   /* used idx so far */
    xor edi, edi
    call qd2_post
    mov edi, 1
    call qd2_post
1:  call ring_base
    movzx ecx, word ptr [rax + RING_USED + 2]
    cmp cx, r14w
    jne 2f
    pause
    jmp 1b
2:  mov ecx, r14d
    and ecx, 7
    mov edi, dword ptr [rax + RING_USED + 4 + rcx * 8]   /* the head: 0 or 3 */
    inc r14d
    inc r13d
    xor edx, edx
    mov eax, edi
    mov ecx, 3
    div ecx
    mov edi, eax                        /* the slot */
    cmp byte ptr [rdi * 8 + qd_status], 0
    jne virtio_fail
    cmp r12d, BENCH_BIG_COUNT
    jae 3f
    call qd2_post
3:  cmp r13d, BENCH_BIG_COUNT
    jb 1b
    lea eax, [rbx + 1]
    out DEBUG_PORT, al
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    ret

/* qd2_post(edi = slot): request r12 (type r15d: 1 IN, 0 OUT) into the slot's
 * descriptors, posted and notified; r12 advances. */
qd2_post:
    push rbx
    mov ebx, edi
    mov eax, r15d
    xor eax, 1                          /* virtio-blk type: IN 0, OUT 1 */
    mov ecx, ebx
    shl ecx, 4
    mov dword ptr [rcx + qd_hdr], eax
    mov dword ptr [rcx + qd_hdr + 4], 0
    mov eax, r12d
    shl rax, 11
    mov qword ptr [rcx + qd_hdr + 8], rax
    mov byte ptr [rbx * 8 + qd_status], 0xff
    lea edi, [rbx + rbx * 2]            /* header descriptor */
    lea rsi, [rcx + qd_hdr]
    mov edx, 16
    mov ecx, 1
    call set_desc
    lea edi, [rbx + rbx * 2 + 1]        /* data */
    mov esi, ebx
    shl rsi, 20
    add rsi, offset bench_buf
    mov edx, BENCH_BIG_BYTES
    mov ecx, 1
    test r15d, r15d
    jz 1f
    mov ecx, 3                          /* NEXT | WRITE: the device fills it */
1:  call set_desc
    lea edi, [rbx + rbx * 2 + 2]        /* status */
    lea rsi, [rbx * 8 + qd_status]
    mov edx, 1
    mov ecx, 2
    call set_desc
    call ring_base
    mov rcx, [vio_avail]
    mov edx, ecx
    and edx, 7
    lea edi, [rbx + rbx * 2]
    mov word ptr [rax + RING_AVAIL + 4 + rdx * 2], di
    inc rcx
    mov [vio_avail], rcx
    mov word ptr [rax + RING_AVAIL + 2], cx
    mov rdx, [vio_qnotify]
    mov word ptr [rdx], 0
    inc r12d
    pop rbx
    ret

/* bench_sequential(edi = first milestone, esi = log2 of sectors per request, edx =
 * request bytes, ecx = requests): a sequential write phase (milestones edi, edi+1), then
 * a sequential read phase over the same sectors (edi+2, edi+3). */
bench_sequential:
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov ebx, edi
    mov r13d, esi
    mov r14d, edx
    mov r15d, ecx
    mov eax, ebx
    out DEBUG_PORT, al
    xor r12d, r12d
1:  mov edi, 1                          /* OUT */
    mov esi, r12d
    mov ecx, r13d
    shl esi, cl
    mov edx, r14d
    call bench_request
    inc r12d
    cmp r12d, r15d
    jb 1b
    lea eax, [rbx + 1]
    out DEBUG_PORT, al
    lea eax, [rbx + 2]
    out DEBUG_PORT, al
    xor r12d, r12d
2:  xor edi, edi                        /* IN */
    mov esi, r12d
    mov ecx, r13d
    shl esi, cl
    mov edx, r14d
    call bench_request
    inc r12d
    cmp r12d, r15d
    jb 2b
    lea eax, [rbx + 3]
    out DEBUG_PORT, al
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    ret

/* -> eax: a 4 KiB-aligned sector below BENCH_SPAN_SECTORS, from a 64-bit LCG. */
bench_random_sector:
    mov rax, [bench_lcg]
    mov rcx, 6364136223846793005
    imul rax, rcx
    mov rcx, 1442695040888963407
    add rax, rcx
    mov [bench_lcg], rax
    shr rax, 33
    and eax, BENCH_SPAN_SECTORS - 8
    ret

/* bench_request(edi = type, esi = sector, edx = length): header, bench_buf, status on
 * queue 0; polls the used ring; fails the test on a bad status. */
bench_request:
    push rbx
    push r12
    push r13
    mov dword ptr [blk_hdr], edi
    mov dword ptr [blk_hdr + 4], 0
    mov qword ptr [blk_hdr + 8], rsi
    mov byte ptr [blk_status], 0xff
    mov r12d, edi
    mov r13d, edx
    xor edi, edi
    mov rsi, offset blk_hdr
    mov edx, 16
    mov ecx, 1
    call set_desc
    mov edi, 1
    mov rsi, offset bench_buf
    mov edx, r13d
    xor ecx, ecx
    test r12d, r12d
    jnz 1f
    mov ecx, 2                          /* IN: the device writes the buffer */
1:  or ecx, 1                           /* NEXT */
    call set_desc
    mov edi, 2
    mov rsi, offset blk_status
    mov edx, 1
    mov ecx, 2
    call set_desc
    call virtio_post
    call ring_base
    mov rbx, rax
    mov rcx, [vio_avail]
2:  movzx eax, word ptr [rbx + RING_USED + 2]
    cmp rax, rcx
    je 3f
    pause
    jmp 2b
3:  cmp byte ptr [blk_status], 0
    jne virtio_fail
    pop r13
    pop r12
    pop rbx
    ret

/* test=input: drives the first virtio-input device (1af4:1052): prints its name from the
 * configuration space ("INPUT NAME <name>"), sends a Caps Lock LED event on the status
 * queue, keeps 8 event buffers posted on the event queue, says "INPUT READY", then prints
 * every event it receives as "EV <type> <code> <value>" (hex) until the host powers it
 * off. Each arrival is also milestone 0x30 on the debug port. */
/* test=input-tablet: the same on the input device before the last one (in a library
 * VM's mouse, tablet, keyboard: the tablet). */
test_input_tablet:
    mov qword ptr [vio_skip_last], 1
test_input:
    push rbx
    push r12
    push r13
    call lapic_enable
    mov qword ptr [vio_nqueues], 2
    mov edi, 0x1052
    call virtio_find
    call virtio_start
    /* the name: select VIRTIO_INPUT_CFG_ID_NAME, subsel 0, then size and string */
    mov rbx, [vio_device]
    mov byte ptr [rbx], 1
    mov byte ptr [rbx + 1], 0
    movzx ecx, byte ptr [rbx + 2]
    lea rsi, [rbx + 8]
    mov rdi, offset input_name
    rep movsb
    mov byte ptr [rdi], 0
    lea rdi, [rip + s_input_name]
    call puts
    mov rdi, offset input_name
    call puts
    call newline
    /* status queue: EV_LED LED_CAPSL 1 */
    mov qword ptr [vio_q], 1
    mov word ptr [input_led], 0x11
    mov word ptr [input_led + 2], 1
    mov dword ptr [input_led + 4], 1
    xor edi, edi
    mov rsi, offset input_led
    mov edx, 8
    xor ecx, ecx
    call set_desc
    call virtio_post
    /* event queue: descriptors 0-7, 8 bytes each, device-writable, all available; the
     * driver polls, so no interrupts */
    mov qword ptr [vio_q], 0
    mov rax, offset vq_rings
    mov word ptr [rax + RING_AVAIL], 1
    xor r12d, r12d
1:  mov edi, r12d
    lea rsi, [r12 * 8 + input_events]
    mov edx, 8
    mov ecx, 2
    call set_desc
    call ring_base
    mov word ptr [rax + RING_AVAIL + 4 + r12 * 2], r12w
    inc r12d
    cmp r12d, 8
    jb 1b
    mov word ptr [rax + RING_AVAIL + 2], 8
    mov qword ptr [input_avail], 8
    mov rdx, [vio_qnotify]
    mov word ptr [rdx], 0
    lea rdi, [rip + s_input_ready]
    call puts
    xor r12d, r12d                      /* used entries seen */
2:  call ring_base
    mov rbx, rax
3:  movzx eax, word ptr [rbx + RING_USED + 2]
    cmp ax, r12w
    jne 4f
    pause
    jmp 3b
4:  mov al, 0x30                        /* milestone: an event arrived (latency bench) */
    out DEBUG_PORT, al
    mov eax, r12d
    and eax, 7
    mov r13d, dword ptr [rbx + RING_USED + 4 + rax * 8]   /* descriptor id */
    and r13d, 7
    lea rdi, [rip + s_input_ev]
    call puts
    movzx edi, word ptr [r13 * 8 + input_events]
    call put_hex
    call space
    movzx edi, word ptr [r13 * 8 + input_events + 2]
    call put_hex
    call space
    mov edi, dword ptr [r13 * 8 + input_events + 4]
    call put_hex
    call newline
    /* the buffer goes back */
    mov rax, [input_avail]
    mov ecx, eax
    and ecx, 7
    mov word ptr [rbx + RING_AVAIL + 4 + rcx * 2], r13w
    inc rax
    mov [input_avail], rax
    mov word ptr [rbx + RING_AVAIL + 2], ax
    mov rdx, [vio_qnotify]
    mov word ptr [rdx], 0
    inc r12d
    jmp 2b

/* test=gpu: drives virtio-gpu (1af4:1050) the way Linux's driver does, polling the used
 * rings (both queues set VIRTQ_AVAIL_F_NO_INTERRUPT):
 *   GET_DISPLAY_INFO ("GPU MODE <w> <h>"), GET_EDID ("GPU EDID <bytes 54-61 as a qword>"),
 *   a 128x96 B8G8R8X8 resource with a two-entry backing, SET_SCANOUT, a full
 *   TRANSFER_TO_HOST_2D of a known pattern and a full RESOURCE_FLUSH ("GPU FRAME"), then a
 *   white 16x8 rectangle at (32, 16) transferred and flushed alone ("GPU DAMAGE"), then a
 *   64x64 A8R8G8B8 cursor (hotspot 3, 4) set at (10, 20) and moved to (50, 60) on the
 *   cursor queue ("GPU CURSOR"); then it waits for the display event of a host resize
 *   ("GPU WAIT RESIZE"), clears it and prints the new mode ("GPU MODE ..."), and ends
 *   with "GPU DONE". The pattern: pixel (x, y) has blue 2x, green 2y, red 0x40. */
    .set GPU_W, 128
    .set GPU_H, 96
test_gpu:
    push rbx
    push r12
    push r13
    call gpu_start
    /* GET_DISPLAY_INFO */
    call gpu_mode
    /* GET_EDID scanout 0 */
    mov edi, 0x010a
    call gpu_req_begin
    mov edi, 24 + 8
    call gpu_cmd
    cmp eax, 0x1104
    jne virtio_fail
    lea rdi, [rip + s_gpu_edid]
    call puts
    mov rdi, [gpu_resp + 24 + 8 + 54]
    call put_hex
    call newline
    /* the pattern */
    xor r12d, r12d                      /* y */
1:  xor r13d, r13d                      /* x */
2:  lea eax, [r13 * 2]
    lea ecx, [r12 * 2]
    shl ecx, 8
    or eax, ecx
    or eax, 0x400000
    mov ecx, r12d
    imul ecx, GPU_W
    add ecx, r13d
    mov dword ptr [rcx * 4 + gpu_fb], eax
    inc r13d
    cmp r13d, GPU_W
    jb 2b
    inc r12d
    cmp r12d, GPU_H
    jb 1b
    /* RESOURCE_CREATE_2D id 1, B8G8R8X8, 128x96 */
    mov edi, 1
    mov esi, 2
    mov edx, GPU_W
    mov ecx, GPU_H
    call gpu_create
    /* RESOURCE_ATTACH_BACKING id 1: the framebuffer in two halves */
    mov edi, 0x0106
    call gpu_req_begin
    mov dword ptr [gpu_req + 24], 1
    mov dword ptr [gpu_req + 28], 2
    mov rax, offset gpu_fb
    mov qword ptr [gpu_req + 32], rax
    mov dword ptr [gpu_req + 40], GPU_W * GPU_H * 2
    add rax, GPU_W * GPU_H * 2
    mov qword ptr [gpu_req + 48], rax
    mov dword ptr [gpu_req + 56], GPU_W * GPU_H * 2
    mov edi, 24 + 8 + 32
    call gpu_cmd_ok
    /* SET_SCANOUT 0 -> resource 1, the whole of it */
    mov edi, 0x0103
    call gpu_req_begin
    mov dword ptr [gpu_req + 32], GPU_W
    mov dword ptr [gpu_req + 36], GPU_H
    mov dword ptr [gpu_req + 44], 1
    mov edi, 24 + 24
    call gpu_cmd_ok
    /* TRANSFER_TO_HOST_2D and RESOURCE_FLUSH of the whole frame */
    xor edi, edi
    xor esi, esi
    mov edx, GPU_W
    mov ecx, GPU_H
    call gpu_transfer_flush
    lea rdi, [rip + s_gpu_frame]
    call puts
    /* a white 16x8 rectangle at (32, 16) */
    mov r12d, 16
3:  mov r13d, 32
4:  mov ecx, r12d
    imul ecx, GPU_W
    add ecx, r13d
    mov dword ptr [rcx * 4 + gpu_fb], 0xffffff
    inc r13d
    cmp r13d, 48
    jb 4b
    inc r12d
    cmp r12d, 24
    jb 3b
    mov edi, 32
    mov esi, 16
    mov edx, 16
    mov ecx, 8
    call gpu_transfer_flush
    lea rdi, [rip + s_gpu_damage]
    call puts
    /* the cursor: resource 2, 64x64 A8R8G8B8; pixel 0 is A=0x80 R=0x11 G=0x22 B=0x33
     * (bytes A R G B), the rest opaque red */
    mov ecx, 64 * 64
    mov rdi, offset gpu_cursor
    mov eax, 0x0000ffff                 /* bytes ff ff 00 00: A=ff R=ff G=0 B=0 */
    rep stosd
    mov dword ptr [gpu_cursor], 0x33221180
    mov edi, 2
    mov esi, 3
    mov edx, 64
    mov ecx, 64
    call gpu_create
    mov edi, 0x0106
    call gpu_req_begin
    mov dword ptr [gpu_req + 24], 2
    mov dword ptr [gpu_req + 28], 1
    mov rax, offset gpu_cursor
    mov qword ptr [gpu_req + 32], rax
    mov dword ptr [gpu_req + 40], 64 * 64 * 4
    mov edi, 24 + 8 + 16
    call gpu_cmd_ok
    mov edi, 0x0105                     /* TRANSFER_TO_HOST_2D, resource 2, 64x64 */
    call gpu_req_begin
    mov dword ptr [gpu_req + 32], 64
    mov dword ptr [gpu_req + 36], 64
    mov dword ptr [gpu_req + 48], 2
    mov edi, 24 + 32
    call gpu_cmd_ok
    /* UPDATE_CURSOR: pos (0, 10, 20), resource 2, hotspot (3, 4) */
    mov edi, 0x0300
    call gpu_req_begin
    mov dword ptr [gpu_req + 28], 10
    mov dword ptr [gpu_req + 32], 20
    mov dword ptr [gpu_req + 40], 2
    mov dword ptr [gpu_req + 44], 3
    mov dword ptr [gpu_req + 48], 4
    call gpu_cursor_cmd
    mov edi, 0x0301                     /* MOVE_CURSOR to (50, 60) */
    call gpu_req_begin
    mov dword ptr [gpu_req + 28], 50
    mov dword ptr [gpu_req + 32], 60
    call gpu_cursor_cmd
    lea rdi, [rip + s_gpu_cursor]
    call puts
    /* the display event: wait for events_read bit 0, clear it, read the new mode */
    lea rdi, [rip + s_gpu_wait]
    call puts
    mov rbx, [vio_device]
5:  test dword ptr [rbx], 1
    jnz 6f
    pause
    jmp 5b
6:  mov dword ptr [rbx + 4], 1          /* events_clear */
    call gpu_mode
    lea rdi, [rip + s_gpu_done]
    call puts
    call power_off

/* gpu_start: finds virtio-gpu (1af4:1050), starts it with both queues, and asks for no
 * interrupts on either (the driver polls). */
gpu_start:
    call lapic_enable
    mov qword ptr [vio_nqueues], 2
    mov edi, 0x1050
    call virtio_find
    call virtio_start
    mov rax, offset vq_rings
    mov word ptr [rax + RING_AVAIL], 1
    mov word ptr [rax + 4096 + RING_AVAIL], 1
    ret

/* gpu_create(edi = resource id, esi = format, edx = width, ecx = height):
 * RESOURCE_CREATE_2D, failing the test unless it succeeds. */
gpu_create:
    push rdi
    push rsi
    push rdx
    push rcx
    mov edi, 0x0101
    call gpu_req_begin
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    mov dword ptr [gpu_req + 24], edi
    mov dword ptr [gpu_req + 28], esi
    mov dword ptr [gpu_req + 32], edx
    mov dword ptr [gpu_req + 36], ecx
    mov edi, 24 + 16
    jmp gpu_cmd_ok

/* gpu_mode: GET_DISPLAY_INFO; prints "GPU MODE <w> <h>" of pmodes[0]. */
gpu_mode:
    mov edi, 0x0100
    call gpu_req_begin
    mov edi, 24
    call gpu_cmd
    cmp eax, 0x1101
    jne virtio_fail
    lea rdi, [rip + s_gpu_mode]
    call puts
    mov edi, dword ptr [gpu_resp + 24 + 8]
    call put_hex
    call space
    mov edi, dword ptr [gpu_resp + 24 + 12]
    call put_hex
    jmp newline

/* gpu_transfer_flush(edi = x, esi = y, edx = w, ecx = h) of resource 1: the transfer's
 * offset is the rectangle's first pixel in the backing, as Linux computes it. */
gpu_transfer_flush:
    push r12
    push r13
    push r14
    push r15
    mov r12d, edi
    mov r13d, esi
    mov r14d, edx
    mov r15d, ecx
    mov edi, 0x0105
    call gpu_req_begin
    call gpu_req_rect
    mov eax, r13d
    imul eax, GPU_W
    add eax, r12d
    shl eax, 2
    mov qword ptr [gpu_req + 40], rax
    mov dword ptr [gpu_req + 48], 1
    mov edi, 24 + 32
    call gpu_cmd_ok
    mov edi, 0x0104
    call gpu_req_begin
    call gpu_req_rect
    mov dword ptr [gpu_req + 40], 1
    mov edi, 24 + 24
    call gpu_cmd_ok
    pop r15
    pop r14
    pop r13
    pop r12
    ret

gpu_req_rect:
    mov dword ptr [gpu_req + 24], r12d
    mov dword ptr [gpu_req + 28], r13d
    mov dword ptr [gpu_req + 32], r14d
    mov dword ptr [gpu_req + 36], r15d
    ret

/* gpu_req_begin(edi = command): a zeroed request with that type. */
gpu_req_begin:
    push rdi
    mov rdi, offset gpu_req
    xor eax, eax
    mov ecx, 16
    rep stosq
    pop rdi
    mov dword ptr [gpu_req], edi
    ret

/* gpu_cmd_ok(edi = request length): gpu_cmd, failing the test unless RESP_OK_NODATA. */
gpu_cmd_ok:
    call gpu_cmd
    cmp eax, 0x1100
    jne virtio_fail
    ret

/* gpu_cmd(edi = request length) -> eax: the response type. gpu_req out, gpu_resp in, on
 * the control queue; polls the used ring. */
gpu_cmd:
    push rbx
    mov ebx, edi
    mov qword ptr [vio_q], 0
    mov dword ptr [gpu_resp], 0
    xor edi, edi
    mov rsi, offset gpu_req
    mov edx, ebx
    mov ecx, 1                          /* NEXT */
    call set_desc
    mov edi, 1
    mov rsi, offset gpu_resp
    mov edx, 1100
    mov ecx, 2                          /* WRITE */
    call set_desc
    call gpu_post_wait
    mov eax, dword ptr [gpu_resp]
    pop rbx
    ret

/* gpu_cursor_cmd: gpu_req (struct virtio_gpu_update_cursor, 56 bytes) on the cursor queue. */
gpu_cursor_cmd:
    mov qword ptr [vio_q], 1
    xor edi, edi
    mov rsi, offset gpu_req
    mov edx, 56
    xor ecx, ecx
    call set_desc
    call gpu_post_wait
    mov qword ptr [vio_q], 0
    ret

/* gpu_post_wait: posts descriptor 0 of the current queue, polls until it is used. */
gpu_post_wait:
    call virtio_post
    call ring_base
    mov rcx, [vio_q]
    lea rdx, [rip + vio_avail]
    mov rcx, [rdx + rcx * 8]
1:  movzx edx, word ptr [rax + RING_USED + 2]
    cmp rdx, rcx
    je 2f
    pause
    jmp 1b
2:  ret

/* test=gpu-bench: frame cost through virtio-gpu. A 1920x1080 B8G8R8X8 resource backed by
 * 2025 separate 4 KiB pages (as a driver's scattered pages would be), shown on the
 * scanout; then 60 full-frame TRANSFER_TO_HOST_2D + RESOURCE_FLUSH pairs between
 * milestones 0x20 and 0x21, 600 pairs for a 64x64 rectangle at (256, 256) between
 * 0x22 and 0x23, 600 for a 1x1 rectangle (the fixed cost) between 0x24 and 0x25, and 100 for a
 * 512x512 rectangle at (256, 256) between 0x26 and 0x27. */
    .set BENCH_FB_W, 1920
    .set BENCH_FB_H, 1080
    .set BENCH_FB_PAGES, 2025
/* test=gpu-anim: a changing 1920x1080 display, as a desktop playing a video would give the
 * console: the same scattered-page resource as gpu-bench, then forever: fill the frame
 * with the next shade of grey, transfer and flush all of it, wait a few milliseconds. */
test_gpu_anim:
    call gpu_big_fb
    xor r12d, r12d
1:  inc r12d
    mov eax, r12d
    and eax, 0xff
    imul eax, eax, 0x010101
    mov rdi, offset bench_buf
    mov ecx, BENCH_FB_PAGES * 1024
    rep stosd
    xor edi, edi
    xor esi, esi
    mov edx, BENCH_FB_W
    mov ecx, BENCH_FB_H
    call bench_transfer_flush
    mov ecx, 100000
2:  pause
    dec ecx
    jnz 2b
    jmp 1b

/* The 1920x1080 B8G8R8X8 resource of gpu-bench, backed by BENCH_FB_PAGES separate pages
 * at bench_buf, on the scanout. */
gpu_big_fb:
    call gpu_start
    mov edi, 1
    mov esi, 2
    mov edx, BENCH_FB_W
    mov ecx, BENCH_FB_H
    call gpu_create
    /* ATTACH_BACKING with one entry per page, built in gpu_big_req */
    mov dword ptr [gpu_big_req], 0x0106
    mov dword ptr [gpu_big_req + 24], 1
    mov dword ptr [gpu_big_req + 28], BENCH_FB_PAGES
    xor ecx, ecx
    mov rax, offset bench_buf
1:  mov rdx, rcx
    shl rdx, 4
    mov qword ptr [gpu_big_req + 32 + rdx], rax
    mov dword ptr [gpu_big_req + 40 + rdx], 4096
    add rax, 4096
    inc ecx
    cmp ecx, BENCH_FB_PAGES
    jb 1b
    mov qword ptr [vio_q], 0
    xor edi, edi
    mov rsi, offset gpu_big_req
    mov edx, 24 + 8 + 16 * BENCH_FB_PAGES
    mov ecx, 1
    call set_desc
    mov edi, 1
    mov rsi, offset gpu_resp
    mov edx, 1100
    mov ecx, 2
    call set_desc
    call gpu_post_wait
    cmp dword ptr [gpu_resp], 0x1100
    jne virtio_fail
    mov edi, 0x0103                     /* SET_SCANOUT */
    call gpu_req_begin
    mov dword ptr [gpu_req + 32], BENCH_FB_W
    mov dword ptr [gpu_req + 36], BENCH_FB_H
    mov dword ptr [gpu_req + 44], 1
    mov edi, 24 + 24
    call gpu_cmd_ok
    ret

test_gpu_bench:
    push r12
    call gpu_big_fb
    mov al, 0x20
    out DEBUG_PORT, al
    xor r12d, r12d
2:  xor edi, edi
    xor esi, esi
    mov edx, BENCH_FB_W
    mov ecx, BENCH_FB_H
    call bench_transfer_flush
    inc r12d
    cmp r12d, 60
    jb 2b
    mov al, 0x21
    out DEBUG_PORT, al
    mov al, 0x22
    out DEBUG_PORT, al
    xor r12d, r12d
3:  mov edi, 256
    mov esi, 256
    mov edx, 64
    mov ecx, 64
    call bench_transfer_flush
    inc r12d
    cmp r12d, 600
    jb 3b
    mov al, 0x23
    out DEBUG_PORT, al
    mov al, 0x24                        /* a 1x1 rectangle: the fixed cost of a pair */
    out DEBUG_PORT, al
    xor r12d, r12d
4:  mov edi, 256
    mov esi, 256
    mov edx, 1
    mov ecx, 1
    call bench_transfer_flush
    inc r12d
    cmp r12d, 600
    jb 4b
    mov al, 0x25
    out DEBUG_PORT, al
    mov al, 0x26                        /* a 512x512 rectangle */
    out DEBUG_PORT, al
    xor r12d, r12d
5:  mov edi, 256
    mov esi, 256
    mov edx, 512
    mov ecx, 512
    call bench_transfer_flush
    inc r12d
    cmp r12d, 100
    jb 5b
    mov al, 0x27
    out DEBUG_PORT, al
    lea rdi, [rip + s_bench_done]
    call puts
    call power_off

/* bench_transfer_flush(edi = x, esi = y, edx = w, ecx = h): TRANSFER_TO_HOST_2D (offset
 * of the rectangle's first pixel in a 1920-wide frame) and RESOURCE_FLUSH of resource 1,
 * posted together with one notification as Linux's driver does, then both awaited. */
bench_transfer_flush:
    push rbx
    mov eax, esi
    imul eax, BENCH_FB_W
    add eax, edi
    shl eax, 2
    /* the transfer in gpu_req, the flush in gpu_req2 */
    mov dword ptr [gpu_req], 0x0105
    mov dword ptr [gpu_req + 24], edi
    mov dword ptr [gpu_req + 28], esi
    mov dword ptr [gpu_req + 32], edx
    mov dword ptr [gpu_req + 36], ecx
    mov qword ptr [gpu_req + 40], rax
    mov dword ptr [gpu_req + 48], 1
    mov dword ptr [gpu_req2], 0x0104
    mov dword ptr [gpu_req2 + 24], edi
    mov dword ptr [gpu_req2 + 28], esi
    mov dword ptr [gpu_req2 + 32], edx
    mov dword ptr [gpu_req2 + 36], ecx
    mov dword ptr [gpu_req2 + 40], 1
    mov qword ptr [vio_q], 0
    xor edi, edi
    mov rsi, offset gpu_req
    mov edx, 24 + 32
    mov ecx, 1
    call set_desc
    mov edi, 1
    mov rsi, offset gpu_resp
    mov edx, 24
    mov ecx, 2
    call set_desc
    mov edi, 2
    mov rsi, offset gpu_req2
    mov edx, 24 + 24
    mov ecx, 1
    call set_desc
    mov edi, 3
    mov rsi, offset gpu_resp2
    mov edx, 24
    mov ecx, 2
    call set_desc
    /* avail ring: heads 0 and 2, then one notification */
    call ring_base
    mov rbx, rax
    mov rcx, [vio_avail]
    mov edx, ecx
    and edx, 7
    mov word ptr [rbx + RING_AVAIL + 4 + rdx * 2], 0
    inc ecx
    mov edx, ecx
    and edx, 7
    mov word ptr [rbx + RING_AVAIL + 4 + rdx * 2], 2
    inc rcx
    mov [vio_avail], rcx
    mov word ptr [rbx + RING_AVAIL + 2], cx
    mov rdx, [vio_qnotify]
    mov word ptr [rdx], 0
1:  movzx edx, word ptr [rbx + RING_USED + 2]
    cmp rdx, rcx
    je 2f
    pause
    jmp 1b
2:  cmp dword ptr [gpu_resp], 0x1100
    jne virtio_fail
    cmp dword ptr [gpu_resp2], 0x1100
    jne virtio_fail
    pop rbx
    ret

/* test=fb: the boot framebuffer from boot_params.screen_info (Linux 64-bit boot only):
 * "FB <isVGA> <width> <height> <depth> <base> <line length> <size in 64 KiB>", then the
 * whole screen drawn (pixel (x, y) = blue x & 0xff, green y & 0xff, red 0x30) and
 * "FB DRAWN"; then, after any byte on COM1, a white 8x8 square at (100, 50) and
 * "FB SQUARE". Then it waits to be powered off. */
test_fb:
    push rbx
    push r12
    push r13
    cmp dword ptr [boot_proto], 2
    jne 9f
    mov rbx, [boot_ptr]
    lea rdi, [rip + s_fb]
    call puts
    movzx edi, byte ptr [rbx + 15]
    call put_hex
    call space
    movzx edi, word ptr [rbx + 18]
    call put_hex
    call space
    movzx edi, word ptr [rbx + 20]
    call put_hex
    call space
    movzx edi, word ptr [rbx + 22]
    call put_hex
    call space
    mov edi, dword ptr [rbx + 24]
    call put_hex
    call space
    movzx edi, word ptr [rbx + 36]
    call put_hex
    call space
    mov edi, dword ptr [rbx + 28]
    call put_hex
    call newline
    cmp byte ptr [rbx + 15], 0x23       /* VIDEO_TYPE_VLFB */
    jne 9f
    xor r12d, r12d                      /* y */
1:  xor r13d, r13d                      /* x */
2:  movzx eax, r13b
    movzx ecx, r12b
    shl ecx, 8
    or eax, ecx
    or eax, 0x300000
    movzx ecx, word ptr [rbx + 36]
    imul ecx, r12d
    lea ecx, [rcx + r13 * 4]
    mov edx, dword ptr [rbx + 24]
    mov dword ptr [rdx + rcx], eax
    inc r13d
    cmp r13w, word ptr [rbx + 18]
    jb 2b
    inc r12d
    cmp r12w, word ptr [rbx + 20]
    jb 1b
    lea rdi, [rip + s_fb_drawn]
    call puts
    mov dx, COM1 + 5                    /* wait for a byte */
3:  in al, dx
    test al, 1
    jnz 4f
    pause
    jmp 3b
4:  mov dx, COM1
    in al, dx
    mov r12d, 50
5:  mov r13d, 100
6:  movzx ecx, word ptr [rbx + 36]
    imul ecx, r12d
    lea ecx, [rcx + r13 * 4]
    mov edx, dword ptr [rbx + 24]
    mov dword ptr [rdx + rcx], 0xffffff
    inc r13d
    cmp r13d, 108
    jb 6b
    inc r12d
    cmp r12d, 58
    jb 5b
    lea rdi, [rip + s_fb_square]
    call puts
7:  pause
    jmp 7b
9:  lea rdi, [rip + s_fb_none]
    call puts
    call power_off

/* test=atapi: an ATAPI PIO driver for the CD-ROM on the secondary IDE channel (0x170,
 * 0x376), polling with nIEN set:
 *   "ATAPI SIG <lba mid> <lba high>" after DEVICE RESET (14 EB for a packet device),
 *   "ATAPI MODEL <model>" from IDENTIFY PACKET DEVICE,
 *   "ATAPI TUR <sense key>" for the first TEST UNIT READY (6: the disc was inserted),
 *   "ATAPI CAPACITY <last LBA>", "ATAPI PVD <bytes 1-8 of sector 16>" and
 *   "ATAPI VOLUME <volume id>", then the root directory's first file:
 *   "ATAPI FILE <name>" and "ATAPI DATA <its first 8 bytes>"; then it locks the tray
 *   ("ATAPI LOCKED") and (not under test=atapi-noswap) says "ATAPI WAIT SWAP", until TEST
 *   UNIT READY reports a unit attention and then readiness: "ATAPI SWAPPED", "ATAPI CAPACITY ...",
 *   "ATAPI VOLUME ..."; then it unlocks and START STOP UNIT ejects: "ATAPI EJECTED <key> <asc> <ascq>" from REQUEST SENSE
 *   after a TEST UNIT READY; "ATAPI DONE". */
    .set ATA_CMD, 0x170
    .set ATA_CTRL, 0x376
test_atapi_noswap:
    mov qword ptr [atapi_noswap], 1
test_atapi:
    push rbx
    push r12
    mov dx, ATA_CTRL
    mov al, 0x02                        /* nIEN: we poll */
    out dx, al
    mov dx, ATA_CMD + 6
    mov al, 0xa0                        /* the master */
    out dx, al
    mov dx, ATA_CMD + 7
    mov al, 0x08                        /* DEVICE RESET: the signature again */
    out dx, al
    call atapi_wait
    lea rdi, [rip + s_atapi_sig]
    call puts
    mov dx, ATA_CMD + 4
    in al, dx
    movzx edi, al
    call put_hex
    call space
    mov dx, ATA_CMD + 5
    in al, dx
    movzx edi, al
    call put_hex
    call newline
    /* IDENTIFY PACKET DEVICE: 256 words into atapi_buf */
    mov dx, ATA_CMD + 7
    mov al, 0xa1
    out dx, al
    call atapi_wait
    mov rdi, offset atapi_buf
    mov ecx, 256
    mov dx, ATA_CMD
    rep insw
    /* the model, words 27-46, two characters a word, high byte first */
    lea rdi, [rip + s_atapi_model]
    call puts
    xor ecx, ecx
1:  movzx eax, word ptr [rcx * 2 + atapi_buf + 54]
    xchg al, ah
    mov word ptr [rcx * 2 + atapi_text], ax
    inc ecx
    cmp ecx, 20
    jb 1b
    mov byte ptr [atapi_text + 40], 0
    mov rdi, offset atapi_text
    call puts_trimmed
    call newline
    /* TEST UNIT READY: the sense key of the first one */
    call atapi_cdb_clear
    call atapi_packet
    lea rdi, [rip + s_atapi_tur]
    call puts
    movzx edi, byte ptr [atapi_error]
    shr edi, 4
    call put_hex
    call newline
    call atapi_capacity_and_volume
    /* the PVD's standard identifier */
    lea rdi, [rip + s_atapi_pvd]
    call puts
    mov rdi, [atapi_buf]
    shr rdi, 8
    bswap rdi
    shr rdi, 8
    call put_hex
    call newline
    /* the root directory: PVD offset 156 is its record, extent at +2 */
    mov eax, dword ptr [atapi_buf + 156 + 2]
    mov edi, eax
    call atapi_read_block
    /* skip "." and "..": the third record is the first file */
    mov rbx, offset atapi_buf
    movzx eax, byte ptr [rbx]
    add rbx, rax
    movzx eax, byte ptr [rbx]
    add rbx, rax
    lea rdi, [rip + s_atapi_file]
    call puts
    movzx ecx, byte ptr [rbx + 32]      /* name length */
    lea rsi, [rbx + 33]
    mov rdi, offset atapi_text
    rep movsb
    mov byte ptr [rdi], 0
    mov rdi, offset atapi_text
    call puts
    call newline
    mov edi, dword ptr [rbx + 2]        /* the file's extent */
    call atapi_read_block
    lea rdi, [rip + s_atapi_data]
    call puts
    mov rdi, [atapi_buf]
    bswap rdi
    call put_hex
    call newline
    /* PREVENT ALLOW MEDIUM REMOVAL: lock the tray while "installing" */
    call atapi_cdb_clear
    mov byte ptr [atapi_cdb], 0x1e
    mov byte ptr [atapi_cdb + 4], 1
    call atapi_packet
    lea rdi, [rip + s_atapi_locked]
    call puts
    cmp qword ptr [atapi_noswap], 0
    jne 5f
    /* the host swaps the disc: TEST UNIT READY until a unit attention */
    lea rdi, [rip + s_atapi_wait]
    call puts
2:  call atapi_cdb_clear
    call atapi_packet
    movzx eax, byte ptr [atapi_error]
    shr eax, 4
    cmp eax, 6
    je 3f
    pause
    jmp 2b
3:  call atapi_cdb_clear                /* then until the drive is ready (a disc is in) */
    call atapi_packet
    cmp byte ptr [atapi_error], 0
    je 4f
    pause
    jmp 3b
4:  lea rdi, [rip + s_atapi_swapped]
    call puts
    call atapi_capacity_and_volume
5:  call atapi_cdb_clear                /* unlock, then START STOP UNIT with LoEj: eject */
    mov byte ptr [atapi_cdb], 0x1e
    call atapi_packet
    call atapi_cdb_clear
    mov byte ptr [atapi_cdb], 0x1b
    mov byte ptr [atapi_cdb + 4], 0x02
    call atapi_packet
    call atapi_cdb_clear
    call atapi_packet                   /* TEST UNIT READY: not ready now */
    call atapi_cdb_clear
    mov byte ptr [atapi_cdb], 0x03      /* REQUEST SENSE */
    mov byte ptr [atapi_cdb + 4], 18
    call atapi_packet
    lea rdi, [rip + s_atapi_ejected]
    call puts
    movzx edi, byte ptr [atapi_buf + 2]
    call put_hex
    call space
    movzx edi, byte ptr [atapi_buf + 12]
    call put_hex
    call space
    movzx edi, byte ptr [atapi_buf + 13]
    call put_hex
    call newline
    lea rdi, [rip + s_atapi_done]
    call puts
    call power_off

/* READ CAPACITY ("ATAPI CAPACITY <last LBA>"), then sector 16 (the PVD) into atapi_buf
 * and "ATAPI VOLUME <volume id>" (bytes 40-71, trailing spaces cut). */
atapi_capacity_and_volume:
    call atapi_cdb_clear
    mov byte ptr [atapi_cdb], 0x25
    call atapi_packet
    lea rdi, [rip + s_atapi_capacity]
    call puts
    mov edi, dword ptr [atapi_buf]
    bswap edi
    call put_hex
    call newline
    mov edi, 16
    call atapi_read_block
    lea rdi, [rip + s_atapi_volume]
    call puts
    lea rsi, [rip + atapi_buf + 40]
    mov rdi, offset atapi_text
    mov ecx, 32
    rep movsb
    mov byte ptr [atapi_text + 32], 0
    mov rdi, offset atapi_text
    call puts_trimmed
    jmp newline

/* atapi_read_block(edi = LBA): READ(10) of one block into atapi_buf. */
atapi_read_block:
    call atapi_cdb_clear
    mov byte ptr [atapi_cdb], 0x28
    bswap edi
    mov dword ptr [atapi_cdb + 2], edi
    mov byte ptr [atapi_cdb + 8], 1
    jmp atapi_packet

atapi_cdb_clear:
    mov qword ptr [atapi_cdb], 0
    mov dword ptr [atapi_cdb + 8], 0
    ret

/* atapi_packet: sends atapi_cdb with a 2048-byte limit and reads whatever data comes
 * into atapi_buf; leaves the error register in atapi_error (0 if the status has no ERR). */
atapi_packet:
    push rbx
    mov edi, 0x0800
    call atapi_send
    mov rbx, offset atapi_buf
1:  call atapi_wait
    test al, 0x08                       /* DRQ: data to read */
    jz 2f
    mov dx, ATA_CMD + 4
    in al, dx
    movzx ecx, al
    mov dx, ATA_CMD + 5
    in al, dx
    movzx eax, al
    shl eax, 8
    or ecx, eax
    shr ecx, 1
    mov rdi, rbx
    mov dx, ATA_CMD
    rep insw
    mov rbx, rdi
    jmp 1b
2:  mov byte ptr [atapi_error], 0
    test al, 0x01
    jz 3f
    mov dx, ATA_CMD + 1
    in al, dx
    mov byte ptr [atapi_error], al
3:  pop rbx
    ret

/* atapi_send(edi = byte count limit): PACKET (PIO) and the 12 bytes of atapi_cdb. */
atapi_send:
    mov dx, ATA_CMD + 1
    xor eax, eax
    out dx, al                          /* features: PIO */
    mov eax, edi
    mov dx, ATA_CMD + 4
    out dx, al
    mov al, ah
    mov dx, ATA_CMD + 5
    out dx, al
    mov dx, ATA_CMD + 7
    mov al, 0xa0
    out dx, al
    call atapi_wait
    mov rsi, offset atapi_cdb
    mov ecx, 6
    mov dx, ATA_CMD
    rep outsw
    ret

/* atapi_wait -> al: the status once BSY is clear. */
atapi_wait:
    mov dx, ATA_CMD + 7
1:  in al, dx
    test al, 0x80
    jz 2f
    pause
    jmp 1b
2:  ret

/* puts_trimmed(rdi): the string without its trailing spaces. */
puts_trimmed:
    mov rsi, rdi
1:  cmp byte ptr [rsi], 0
    je 2f
    inc rsi
    jmp 1b
2:  cmp rsi, rdi
    je 3f
    cmp byte ptr [rsi - 1], ' '
    jne 3f
    dec rsi
    jmp 2b
3:  mov byte ptr [rsi], 0
    jmp puts

/* test=atapi-bench: reads the whole disc in the CD drive in READ(10) commands of 16
 * blocks (32 KiB), 32-bit PIO, between milestones 0x40 and 0x41 (the capacity is read
 * first); "ATAPI BENCH <blocks>" at the end. */
test_atapi_bench:
    push rbx
    push r12
    push r13
    mov dx, ATA_CTRL
    mov al, 0x02
    out dx, al
    mov dx, ATA_CMD + 6
    mov al, 0xa0
    out dx, al
    call atapi_wait
1:  call atapi_cdb_clear                /* until ready (the first answer is the new disc) */
    call atapi_packet
    cmp byte ptr [atapi_error], 0
    jne 1b
    call atapi_cdb_clear
    mov byte ptr [atapi_cdb], 0x25
    call atapi_packet
    mov r12d, dword ptr [atapi_buf]
    bswap r12d
    inc r12d                            /* blocks on the disc */
    mov al, 0x40
    out DEBUG_PORT, al
    xor r13d, r13d                      /* next LBA */
2:  mov ebx, r12d
    sub ebx, r13d
    jz 4f
    cmp ebx, 16
    jbe 3f
    mov ebx, 16
3:  call atapi_cdb_clear
    mov byte ptr [atapi_cdb], 0x28
    mov eax, r13d
    bswap eax
    mov dword ptr [atapi_cdb + 2], eax
    mov eax, ebx
    xchg al, ah
    mov word ptr [atapi_cdb + 7], ax
    call atapi_packet_fast
    add r13d, ebx
    jmp 2b
4:  mov al, 0x41
    out DEBUG_PORT, al
    lea rdi, [rip + s_atapi_bench]
    call puts
    mov edi, r12d
    call put_hex
    call newline
    call power_off

/* atapi_packet_fast: atapi_packet with the largest byte count limit and 32-bit data reads
 * into bench_buf (reused: the data is not kept); fails the test on an error. */
atapi_packet_fast:
    push rbx
    mov edi, 0xfffe
    call atapi_send
1:  call atapi_wait
    test al, 0x08
    jz 2f
    mov dx, ATA_CMD + 4
    in al, dx
    movzx ecx, al
    mov dx, ATA_CMD + 5
    in al, dx
    movzx eax, al
    shl eax, 8
    or ecx, eax
    shr ecx, 2                          /* DRQ blocks are multiples of 4 here */
    mov rdi, offset bench_buf
    mov dx, ATA_CMD
    rep insd
    jmp 1b
2:  test al, 0x01
    jnz virtio_fail
    pop rbx
    ret

/* test=virtio-rng-pic: the same through the 8259 PICs, as a guest without APIC drivers
 * takes PCI interrupts (on a PC: the ISA IRQ the firmware wrote into Interrupt Line, per
 * the PIIX3's PIRQ routes). Prints "PIC LINE <irq> ELCR <ports 0x4d1:0x4d0>" first. */
test_rng_pic:
    mov qword ptr [vio_use_pic], 1
/* test=virtio-rng-intx: the same without MSI-X, on the legacy INTx line. */
test_rng_intx:
    mov qword ptr [vio_use_msix], 0
    lea rdi, [rip + s_intx]
    call puts
/* test=virtio-rng-moved: the same after the driver moved the device's BARs. */
test_rng_moved:
    mov eax, 0xd0000000
    mov [vio_move_to], rax
/* test=virtio-rng: two 64-byte requests; "RNG <len> <bytes 0-7> <bytes 8-15>" each. */
test_rng:
    call lapic_enable
    mov edi, 0x1044
    call virtio_find
    call virtio_start
    call rng_request
    call rng_request
    lea rdi, [rip + s_rng_irqs]
    call puts
    mov rdi, [irq_count_vio]
    call put_hex
    call newline
    call power_off

rng_request:
    push rbx
    mov qword ptr [vio_buf], 0
    mov qword ptr [vio_buf + 8], 0
    xor edi, edi
    mov rsi, offset vio_buf
    mov edx, 64
    mov ecx, 2                          /* VIRTQ_DESC_F_WRITE */
    call set_desc
    call virtio_submit
    mov ebx, eax
    lea rdi, [rip + s_rng]
    call puts
    mov edi, ebx
    call put_hex
    call space
    mov rdi, [vio_buf]
    call put_hex
    call space
    mov rdi, [vio_buf + 8]
    call put_hex
    call newline
    pop rbx
    ret

/* blk_request(edi = type, rsi = sector, rdx = data buffer or 0, ecx = data length,
 * r8d = 1 if the device writes the data): header, data, status; returns the status. */
blk_request:
    push rbx
    push r12
    push r13
    mov dword ptr [blk_hdr], edi
    mov dword ptr [blk_hdr + 4], 0
    mov qword ptr [blk_hdr + 8], rsi
    mov byte ptr [blk_status], 0xff
    mov r12, rdx
    mov r13d, ecx
    mov ebx, r8d
    xor edi, edi
    mov rsi, offset blk_hdr
    mov edx, 16
    mov ecx, 1                          /* NEXT */
    call set_desc
    mov edi, 1
    test r12, r12
    jz 1f
    mov rsi, r12
    mov edx, r13d
    lea ecx, [rbx * 2 + 1]              /* NEXT | WRITE if the device writes */
    call set_desc
    mov edi, 2
1:  mov rsi, offset blk_status
    mov edx, 1
    mov ecx, 2                          /* WRITE */
    call set_desc
    call virtio_submit
    movzx eax, byte ptr [blk_status]
    pop r13
    pop r12
    pop rbx
    ret

/* print_status(rdi = label, eax = status) */
print_status:
    push rax
    call puts
    pop rdi
    call put_hex
    jmp newline

/* test=virtio-blk: capacity, read-only bit, sector 0 as the host wrote it, write sector 1
 * and read it back, flush, the serial, and a read past the end. */
test_blk:
    push rbx
    call lapic_enable
    mov edi, 0x1042
    call virtio_find
    call virtio_start
    lea rdi, [rip + s_blk_capacity]
    call puts
    mov rbx, [vio_device]
    mov rdi, [rbx]                      /* capacity, in 512-byte sectors */
    mov [blk_capacity], rdi
    call put_hex
    call newline
    lea rdi, [rip + s_blk_ro]
    call puts
    mov rdi, [vio_features]
    shr edi, 5                          /* VIRTIO_BLK_F_RO */
    and edi, 1
    call put_hex
    call newline
    /* sector 0 */
    mov edi, 0                          /* IN */
    xor esi, esi
    mov rdx, offset blk_data2
    mov ecx, 512
    mov r8d, 1
    call blk_request
    lea rdi, [rip + s_blk_sector0]
    call print_status
    lea rdi, [rip + s_blk_first]
    call puts
    mov rdi, [blk_data2]
    bswap rdi                           /* print the bytes in disk order */
    call put_hex
    call newline
    /* write sector 1 with a pattern: byte i = 3i + 7 */
    mov rdi, offset blk_data
    xor ecx, ecx
1:  lea eax, [rcx * 2 + rcx + 7]
    mov byte ptr [rdi + rcx], al
    inc ecx
    cmp ecx, 512
    jb 1b
    mov edi, 1                          /* OUT */
    mov esi, 1
    mov rdx, offset blk_data
    mov ecx, 512
    xor r8d, r8d
    call blk_request
    lea rdi, [rip + s_blk_write]
    call print_status
    /* read it back */
    mov rdi, offset blk_data2
    mov ecx, 512
    xor eax, eax
    rep stosb
    mov edi, 0
    mov esi, 1
    mov rdx, offset blk_data2
    mov ecx, 512
    mov r8d, 1
    call blk_request
    lea rdi, [rip + s_blk_read]
    call print_status
    mov rsi, offset blk_data
    mov rdi, offset blk_data2
    mov ecx, 512
    repe cmpsb
    sete al
    movzx eax, al
    lea rdi, [rip + s_blk_same]
    call print_status
    /* flush */
    mov edi, 4
    xor esi, esi
    xor edx, edx
    xor ecx, ecx
    xor r8d, r8d
    call blk_request
    lea rdi, [rip + s_blk_flush]
    call print_status
    /* serial */
    mov qword ptr [blk_data2], 0
    mov qword ptr [blk_data2 + 8], 0
    mov qword ptr [blk_data2 + 16], 0
    mov edi, 8
    xor esi, esi
    mov rdx, offset blk_data2
    mov ecx, 20
    mov r8d, 1
    call blk_request
    lea rdi, [rip + s_blk_id]
    call print_status
    lea rdi, [rip + s_blk_serial]
    call puts
    mov rdi, offset blk_data2
    call puts
    call newline
    /* one sector past the end */
    mov edi, 0
    mov rsi, [blk_capacity]
    mov rdx, offset blk_data2
    mov ecx, 512
    mov r8d, 1
    call blk_request
    lea rdi, [rip + s_blk_pastend]
    call print_status
    pop rbx
    call power_off

/* --- C --- */

/* Tests written in C (hostile.c, ...) call these thunks: they keep every register the C
 * calling convention says a callee keeps (rbx, rbp, r12-r15), whatever the helper does. */
    .macro c_export name, target
    .globl \name
\name:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    call \target
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
    .endm

    c_export g_puts, puts
    c_export g_put_hex, put_hex
    c_export g_newline, newline
    c_export g_power_off, power_off
    c_export g_lapic_enable, lapic_enable
    c_export g_virtio_find, virtio_find
    c_export g_virtio_start, virtio_start
    /* (its arguments are in C's order already: rdi, rsi, rdx, rcx, r8) */
    c_export g_blk_request, blk_request

/* g_virtio_config(): the started device's configuration space. */
    .globl g_virtio_config
g_virtio_config:
    mov rax, [vio_device]
    ret

    .globl g_reset_kbd
g_reset_kbd:
    mov al, 0xfe
    out 0x64, al
1:  pause
    jmp 1b

/* Tests in C: entered with the stack aligned as the C calling convention wants it. */
    .macro c_test label, function
\label:
    and rsp, -16
    call \function
    call power_off
    .endm

    c_test test_blk_hostile, blk_hostile_main
    c_test test_fault_panic, fault_panic_main
    c_test test_fault_hang, fault_hang_main
    c_test test_fault_syscall, fault_syscall_main
    c_test test_fault_open, fault_open_main
    c_test test_atapi_dma, atapi_dma_main
    c_test test_atapi_dma_1m, atapi_dma_1m_main
    c_test test_install, install_main
    c_test test_ps2, ps2_main
    c_test test_ps2_mouse, ps2_mouse_main
    c_test test_installed, installed_main
    c_test test_journal, journal_main
    c_test test_snapbench, snapbench_main
    c_test test_snapshot, snapshot_main
    c_test test_migrate, migrate_main
    c_test test_migrate_storm, migrate_storm_main
    c_test test_migrate_100, migrate_100_main
    c_test test_migrate_idle, migrate_idle_main

/* --- power --- */

/* Powers off through the FADT: the hardware-reduced sleep control register if there is
 * one (Vessel), else PM1a_CNT (QEMU's PIIX4). Never returns. */
power_off:
    mov al, 4
    out DEBUG_PORT, al
    mov rdx, [sleep_port]
    test rdx, rdx
    jz 1f
    mov eax, dword ptr [s5_type]
    shl eax, 2
    or eax, 0x20                        /* SLP_EN */
    out dx, al
    jmp 2f
1:  mov rdx, [pm1a_cnt]
    test rdx, rdx
    jz 2f
    mov eax, dword ptr [s5_type]
    shl eax, 10
    or eax, 0x2000                      /* SLP_EN */
    out dx, ax
2:  pause
    jmp 2b

/* --- the tests --- */

test_boot:
    mov dword ptr [quiet], 0
    call read_boot_info
    call walk_acpi
    call report_cpuid
    call report_rtc
    lea rdi, [rip + s_done]
    call puts
    call power_off

test_bench:
    call power_off

/* test=firmware: what the firmware left for an OS, for the firmware-booted guest
 * (firmware/pc-boot.S): the boot information, the ACPI tables (found in the BIOS area),
 * the SMBIOS tables, the MP table and whether the BIOS area is read-only (bios.c). */
test_firmware:
    mov dword ptr [quiet], 0
    call read_boot_info
    call walk_acpi
    and rsp, -16
    call smbios_report
    call mptable_report
    call bios_area_report
    lea rdi, [rip + s_done]
    call puts
    call power_off

test_smp:
    call lapic_enable
    mov eax, LAPIC + 0x20
    mov eax, dword ptr [rax]
    shr eax, 24
    mov [bsp_apic_id], rax
    lea rdi, [rip + s_cpu]
    call puts
    mov rdi, [bsp_apic_id]
    call put_hex
    lea rdi, [rip + s_up_bsp]
    call puts
    /* the real-mode trampoline goes below 1 MiB */
    lea rsi, [rip + trampoline_start]
    mov edi, AP_TRAMPOLINE
    mov ecx, offset trampoline_end - trampoline_start
    rep movsb
    xor r12d, r12d
1:  cmp r12d, dword ptr [cpu_count]
    jae 3f
    lea rax, [rip + apic_ids]
    movzx ebx, byte ptr [rax + r12]
    inc r12d
    cmp rbx, [bsp_apic_id]
    je 1b
    /* INIT, then two STARTUPs (Intel SDM Vol. 3A §8.4.4.1) */
    mov edi, ebx
    mov esi, 0x4500
    call send_ipi
    mov edi, ebx
    mov esi, 0x4600 | (AP_TRAMPOLINE >> 12)
    call send_ipi
    mov edi, ebx
    mov esi, 0x4600 | (AP_TRAMPOLINE >> 12)
    call send_ipi
    jmp 1b
3:  /* wait for every AP, at most about 30 s of TSC at >= 1 GHz */
    mov r13d, dword ptr [cpu_count]
    dec r13d
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r14, rax
4:  cmp dword ptr [ap_count], r13d
    jae 5f
    pause
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r14
    mov rcx, 30000000000
    cmp rax, rcx
    jb 4b
5:  call serial_lock
    lea rdi, [rip + s_smp]
    call puts
    mov edi, dword ptr [ap_count]
    inc edi
    call put_hex
    call newline
    call serial_unlock
    call power_off

/* send_ipi(edi = APIC id, esi = ICR low) */
send_ipi:
    mov eax, LAPIC + 0x310
    shl edi, 24
    mov dword ptr [rax], edi
    mov eax, LAPIC + 0x300
    mov dword ptr [rax], esi
    mov ecx, 100000
1:  pause
    dec ecx
    jnz 1b
    ret

lapic_enable:
    mov eax, LAPIC + 0xf0
    mov dword ptr [rax], 0x100 | VEC_SPURIOUS
    mov eax, LAPIC + 0x80
    mov dword ptr [rax], 0
    ret

/* pic_route(edi = ISA IRQ): the 8259s remapped to VEC_PIC (ICW1-4), only that IRQ (and
 * the cascade) unmasked, and the local APIC's LINT0 in ExtINT mode (virtual wire), through
 * which the PIC reaches the CPU. Prints the IRQ and the ELCR. */
pic_route:
    push rbx
    mov ebx, edi
    lea rdi, [rip + s_pic_line]
    call puts
    mov edi, ebx
    call put_hex
    lea rdi, [rip + s_elcr]
    call puts
    xor eax, eax
    mov dx, 0x4d1
    in al, dx
    shl eax, 8
    mov dx, 0x4d0
    in al, dx
    mov edi, eax
    call put_hex
    call newline
    mov eax, LAPIC + 0x350              /* LVT LINT0 masked while the PICs are set up: */
    mov dword ptr [rax], 0x10700        /* ICW1 clears their masks (the firmware's timer) */
    mov al, 0x11                        /* ICW1: edge (the ELCR decides), cascade, ICW4 */
    out 0x20, al
    out 0xa0, al
    mov al, VEC_PIC
    out 0x21, al
    mov al, VEC_PIC + 8
    out 0xa1, al
    mov al, 4                           /* ICW3: the slave on IRQ 2 */
    out 0x21, al
    mov al, 2
    out 0xa1, al
    mov al, 1                           /* ICW4: 8086 mode, normal EOI */
    out 0x21, al
    out 0xa1, al
    mov eax, 0xfffb                     /* OCW1: everything masked but the cascade... */
    mov ecx, ebx
    and ecx, 15
    btr eax, ecx                        /* ...and the line */
    out 0x21, al
    mov al, ah
    out 0xa1, al
    mov eax, LAPIC + 0x350
    mov dword ptr [rax], 0x700          /* LVT LINT0: ExtINT, unmasked */
    pop rbx
    ret

/* ioapic_route(edi = pin, esi = vector): edge, active high, to APIC 0. */
ioapic_route:
    mov eax, IOAPIC
    lea ecx, [rdi * 2 + 0x11]
    mov dword ptr [rax], ecx
    mov dword ptr [rax + 0x10], 0
    dec ecx
    mov dword ptr [rax], ecx
    mov dword ptr [rax + 0x10], esi
    ret

test_echo:
    call lapic_enable
    mov edi, 4
    mov esi, VEC_SERIAL
    call ioapic_route
    mov dx, COM1 + 1                    /* IER: received data available */
    mov al, 1
    out dx, al
    mov dx, COM1 + 4                    /* MCR: DTR, RTS, OUT2 (the IRQ gate) */
    mov al, 0x0b
    out dx, al
    lea rdi, [rip + s_echo_ready]
    call puts
    xor r12d, r12d                      /* interrupts seen */
1:  mov rax, [irq_count_serial]
    cmp rax, r12
    jne 2f
    pause
    jmp 1b
2:  mov r12, rax
3:  mov dx, COM1 + 5                    /* drain while LSR.DR */
    in al, dx
    test al, 1
    jz 1b
    mov dx, COM1
    in al, dx
    cmp al, 'q'
    je 4f
    call putc
    jmp 3b
4:  lea rdi, [rip + s_echo_bye]
    call puts
    mov rdi, [irq_count_serial]
    call put_hex
    call newline
    call power_off

test_powerbutton:
    call lapic_enable
    mov edi, 5
    mov esi, VEC_GED
    call ioapic_route
    lea rdi, [rip + s_pwrbtn_ready]
    call puts
1:  cmp qword ptr [irq_count_ged], 0
    jne 2f
    pause
    jmp 1b
2:  mov eax, GED_MMIO
    mov ebx, dword ptr [rax]
    lea rdi, [rip + s_ged]
    call puts
    mov edi, ebx
    call put_hex
    call newline
    test ebx, 1
    jz 1b
    call power_off

test_reboot_kbd:
    lea rdi, [rip + s_reboot_kbd]
    call puts
    mov al, 0xfe
    out 0x64, al
    jmp reboot_wait
test_reboot_cf9:
    lea rdi, [rip + s_reboot_cf9]
    call puts
    mov dx, 0xcf9
    mov al, 0x06
    out dx, al
    jmp reboot_wait
test_reboot_acpi:
    lea rdi, [rip + s_reboot_acpi]
    call puts
    mov rdx, [reset_port]
    mov rax, [reset_value]
    out dx, al
reboot_wait:
    pause
    jmp reboot_wait

test_triple:
    lea rdi, [rip + s_triple]
    call puts
    /* Wipe the IDT (ring 3 may: every page is user-writable), then fault: #UD finds no
     * gate, nor does #NP, nor #DF: a triple fault. */
    mov edi, offset idt
    xor eax, eax
    mov ecx, 4096
    rep stosb
    mov r15, TRIPLE_MAGIC
    ud2

test_ticks:
    xor r12d, r12d
1:  inc r12
    lea rdi, [rip + s_tick]
    call puts
    mov rdi, r12
    call put_hex
    call newline
    /* about 20 ms at >= 1 GHz between ticks; 'q' on COM1 ends the test */
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov r13, rax
2:  mov dx, COM1 + 5
    in al, dx
    test al, 1
    jz 3f
    mov dx, COM1
    in al, dx
    cmp al, 'q'
    jne 3f
    call power_off
3:  mov ecx, 20000
4:  pause
    dec ecx
    jnz 4b
    rdtsc
    shl rdx, 32
    or rax, rdx
    sub rax, r13
    cmp rax, 20000000
    jb 2b
    jmp 1b

/* --- serial output (usable in ring 0 and ring 3) --- */

serial_lock:
    push rax
1:  mov eax, 1
    xchg eax, dword ptr [serial_spin]
    test eax, eax
    jz 2f
    pause
    jmp 1b
2:  pop rax
    ret
serial_unlock:
    mov dword ptr [serial_spin], 0
    ret

/* putc(al) */
putc:
    cmp dword ptr [quiet], 0
    jne 2f
    push rdx
    push rax
    mov dx, COM1 + 5
1:  in al, dx
    test al, 0x20                       /* THR empty */
    jz 1b
    pop rax
    mov dx, COM1
    out dx, al
    pop rdx
2:  ret

/* puts(rdi = NUL-terminated string) */
puts:
    push rdi
1:  mov al, byte ptr [rdi]
    test al, al
    jz 2f
    call putc
    inc rdi
    jmp 1b
2:  pop rdi
    ret

/* put_hex(rdi): 16 hex digits */
put_hex:
    push rbx
    mov ecx, 16
1:  rol rdi, 4
    mov eax, edi
    and eax, 0xf
    lea rbx, [rip + hexdigits]
    mov al, byte ptr [rbx + rax]
    push rcx
    call putc
    pop rcx
    dec ecx
    jnz 1b
    pop rbx
    ret

space:
    mov al, ' '
    jmp putc
newline:
    mov al, '\n'
    jmp putc

/* print_ok(eax = ok?) */
print_ok:
    lea rdi, [rip + s_ok]
    test eax, eax
    jnz 1f
    lea rdi, [rip + s_bad]
1:  jmp puts

/* ------------------------------------------------------------------------------------ */
/* AP start-up: copied to AP_TRAMPOLINE; the SIPI starts it in real mode at CS = 0x7000. */

    .code16
trampoline_start:
    cli
    mov ax, cs
    mov ds, ax
    lgdt [tramp_gdt_ptr - trampoline_start]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    .byte 0x66, 0xea            /* ljmpl 0x08:tramp32 (linear) */
    .long AP_TRAMPOLINE + tramp32 - trampoline_start
    .word 0x08
    .code32
tramp32:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    enter_long_mode
    .byte 0xea                  /* ljmp KERNEL_CS:ap_long */
    .long ap_long
    .word KERNEL_CS
    .align 8
tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08: flat 32-bit code */
    .quad 0x00cf92000000ffff    /* 0x10: flat data */
tramp_gdt_ptr:
    .word 23
    .long AP_TRAMPOLINE + tramp_gdt - trampoline_start
trampoline_end:

    .code64
ap_long:
    mov ax, KERNEL_DS
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, 4096
    lock xadd dword ptr [ap_stack_next], eax
    lea rsp, [rax + 4096]
    lidt [idt_ptr]
    mov eax, LAPIC + 0x20
    mov r12d, dword ptr [rax]
    shr r12d, 24
    mov eax, 1
    cpuid
    shr ebx, 24
    call serial_lock
    lea rdi, [rip + s_cpu]
    call puts
    mov edi, r12d
    call put_hex
    lea rdi, [rip + s_up_ap_noline]
    call puts
    cmp ebx, r12d
    je 2f
    lea rdi, [rip + s_cpuid_differs]
    call puts
2:  call newline
    call serial_unlock
    lock inc dword ptr [ap_count]
1:  cli
    hlt
    jmp 1b

/* ------------------------------------------------------------------------------------ */
    .section .rodata
hexdigits:      .ascii "0123456789abcdef"
s_banner:       .ascii "VESSEL-TESTGUEST\n"
s_banner_end:
s_proto_pvh:    .asciz "PROTO pvh\n"
s_proto_linux:  .asciz "PROTO linux64\n"
s_bootptr:      .asciz "ENTRY "
s_cr0:          .asciz " cr0 "
s_cr4:          .asciz " cr4 "
s_efer:         .asciz " efer "
s_magic:        .asciz "MAGIC"
s_e820:         .asciz "E820 "
s_cmdline:      .asciz "CMDLINE "
s_initrd:       .asciz "INITRD "
s_rsdp:         .asciz "RSDP "
s_no_rsdp:      .asciz "RSDP none\n"
s_acpi:         .asciz "ACPI "
s_ok:           .asciz " ok\n"
s_bad:          .asciz " bad\n"
s_sleepctl:     .asciz "SLEEPCTL "
s_resetreg:     .asciz "RESETREG "
s_s5:           .asciz "S5 "
s_no_s5:        .asciz "S5 none\n"
s_cpus:         .asciz "CPUS "
s_done:         .asciz "DONE\n"
s_cpu:          .asciz "CPU "
s_up_bsp:       .asciz " up bsp\n"
s_up_ap_noline: .asciz " up ap"
s_smp:          .asciz "SMP "
s_echo_ready:   .asciz "ECHO READY\n"
s_echo_bye:     .asciz "\nECHO BYE IRQS "
s_pwrbtn_ready: .asciz "PWRBTN READY\n"
s_ged:          .asciz "GED "
s_reboot_kbd:   .asciz "REBOOT kbd\n"
s_reboot_cf9:   .asciz "REBOOT cf9\n"
s_reboot_acpi:  .asciz "REBOOT acpi\n"
s_triple:       .asciz "TRIPLE\n"
s_tick:         .asciz "TICK "
s_cpuid1:       .asciz "CPUID1 "
s_rtc:          .asciz "RTC "
rtc_regs:       .byte 0x32, 0x09, 0x08, 0x07, 0xff
s_hypervisor:   .asciz "HYPERVISOR "
s_cpuid_differs: .asciz " cpuid-apic-id-differs"
s_exception:    .asciz "EXCEPTION "
n_boot:         .asciz "boot"
n_smp:          .asciz "smp"
n_echo:         .asciz "echo"
n_pwrbtn:       .asciz "powerbutton"
n_reboot_kbd:   .asciz "reboot-kbd"
n_reboot_cf9:   .asciz "reboot-cf9"
n_reboot_acpi:  .asciz "reboot-acpi"
n_triple:       .asciz "triple"
n_ticks:        .asciz "ticks"
n_bench:        .asciz "bench"
n_rng:          .asciz "virtio-rng"
s_pci:          .asciz "PCI "
s_rng:          .asciz "RNG "
s_virtio_fail:  .asciz "VIRTIO FAIL "
n_blk:          .asciz "virtio-blk"
n_blk_hostile:  .asciz "blk-hostile"
n_atapi_dma:    .asciz "atapi-dma"
n_install:      .asciz "install"
n_ps2:          .asciz "ps2"
n_journal:      .asciz "journal"
n_snapbench:    .asciz "snapbench"
n_snapshot:     .asciz "snapshot"
n_migrate:      .asciz "migrate"
n_migrate_storm: .asciz "migrate-storm"
n_migrate_100:  .asciz "migrate-100"
n_migrate_idle: .asciz "migrate-idle"
n_ps2_mouse:    .asciz "ps2-mouse"
n_installed:    .asciz "installed"
n_firmware:     .asciz "firmware"
n_atapi_dma_1m: .asciz "atapi-dma-1m"
n_fault_panic:  .asciz "fault-panic"
n_fault_hang:   .asciz "fault-hang"
n_fault_syscall: .asciz "fault-syscall"
n_fault_open:   .asciz "fault-open"
n_rng_intx:     .asciz "virtio-rng-intx"
n_rng_pic:      .asciz "virtio-rng-pic"
n_net:          .asciz "virtio-net"
n_rng_moved:    .asciz "virtio-rng-moved"
s_moved:        .asciz "BARS MOVED\n"
n_blk_bench:    .asciz "blk-bench"
n_input:        .asciz "input"
n_gpu:          .asciz "gpu"
n_fb:           .asciz "fb"
n_atapi:        .asciz "atapi"
n_atapi_bench:  .asciz "atapi-bench"
s_atapi_bench:  .asciz "ATAPI BENCH "
n_atapi_noswap: .asciz "atapi-noswap"
s_atapi_sig:    .asciz "ATAPI SIG "
s_atapi_model:  .asciz "ATAPI MODEL "
s_atapi_tur:    .asciz "ATAPI TUR "
s_atapi_capacity: .asciz "ATAPI CAPACITY "
s_atapi_pvd:    .asciz "ATAPI PVD "
s_atapi_volume: .asciz "ATAPI VOLUME "
s_atapi_file:   .asciz "ATAPI FILE "
s_atapi_data:   .asciz "ATAPI DATA "
s_atapi_wait:   .asciz "ATAPI WAIT SWAP\n"
s_atapi_locked: .asciz "ATAPI LOCKED\n"
s_atapi_swapped: .asciz "ATAPI SWAPPED\n"
s_atapi_ejected: .asciz "ATAPI EJECTED "
s_atapi_done:   .asciz "ATAPI DONE\n"
s_fb:           .asciz "FB "
s_fb_drawn:     .asciz "FB DRAWN\n"
s_fb_square:    .asciz "FB SQUARE\n"
s_fb_none:      .asciz "FB NONE\n"
n_gpu_bench:    .asciz "gpu-bench"
n_gpu_anim:     .asciz "gpu-anim"
n_input_tablet: .asciz "input-tablet"
s_gpu_mode:     .asciz "GPU MODE "
s_gpu_edid:     .asciz "GPU EDID "
s_gpu_frame:    .asciz "GPU FRAME\n"
s_gpu_damage:   .asciz "GPU DAMAGE\n"
s_gpu_cursor:   .asciz "GPU CURSOR\n"
s_gpu_wait:     .asciz "GPU WAIT RESIZE\n"
s_gpu_done:     .asciz "GPU DONE\n"
s_input_name:   .asciz "INPUT NAME "
s_input_ready:  .asciz "INPUT READY\n"
s_input_ev:     .asciz "EV "
s_bench_done:   .asciz "BENCH DONE\n"
s_net_mac:      .asciz "NET MAC "
s_net_status:   .asciz "NET STATUS "
s_net_tx:       .asciz "NET TX "
s_net_rx:       .asciz "NET RX "
s_net_arp:      .asciz "NET ARP "
/* Ethernet broadcast, ARP request (RFC 826): who has 10.0.2.2, tell 10.0.2.15. */
arp_template:
    .byte 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x08, 0x06
    .byte 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01
    .byte 0, 0, 0, 0, 0, 0, 10, 0, 2, 15
    .byte 0, 0, 0, 0, 0, 0, 10, 0, 2, 2
s_intx:         .asciz "INTX\n"
s_pic_line:     .asciz "PIC LINE "
s_elcr:         .asciz " ELCR "
s_blk_capacity: .asciz "BLK CAPACITY "
s_blk_ro:       .asciz "BLK RO "
s_blk_sector0:  .asciz "BLK SECTOR0 "
s_blk_first:    .asciz "BLK FIRST "
s_blk_write:    .asciz "BLK WRITE "
s_blk_read:     .asciz "BLK READ "
s_blk_same:     .asciz "BLK SAME "
s_blk_flush:    .asciz "BLK FLUSH "
s_blk_id:       .asciz "BLK ID "
s_blk_serial:   .asciz "BLK SERIAL "
s_blk_pastend:  .asciz "BLK PASTEND "
s_rng_irqs:     .asciz "RNG IRQS "
    .align 8
tests:
    .quad n_boot, test_boot
    .quad n_smp, test_smp
    .quad n_echo, test_echo
    .quad n_pwrbtn, test_powerbutton
    .quad n_reboot_kbd, test_reboot_kbd
    .quad n_reboot_cf9, test_reboot_cf9
    .quad n_reboot_acpi, test_reboot_acpi
    .quad n_triple, test_triple
    .quad n_ticks, test_ticks
    .quad n_bench, test_bench
    .quad n_rng, test_rng
    .quad n_rng_intx, test_rng_intx
    .quad n_rng_pic, test_rng_pic
    .quad n_net, test_net
    .quad n_rng_moved, test_rng_moved
    .quad n_blk_bench, test_blk_bench
    .quad n_input, test_input
    .quad n_gpu_bench, test_gpu_bench
    .quad n_gpu_anim, test_gpu_anim
    .quad n_input_tablet, test_input_tablet
    .quad n_gpu, test_gpu
    .quad n_fb, test_fb
    .quad n_atapi_noswap, test_atapi_noswap
    .quad n_atapi_bench, test_atapi_bench
    .quad n_atapi, test_atapi
    .quad n_blk, test_blk
    .quad n_blk_hostile, test_blk_hostile
    .quad n_fault_panic, test_fault_panic
    .quad n_fault_hang, test_fault_hang
    .quad n_fault_syscall, test_fault_syscall
    .quad n_fault_open, test_fault_open
    .quad n_atapi_dma_1m, test_atapi_dma_1m
    .quad n_atapi_dma, test_atapi_dma
    .quad n_installed, test_installed
    .quad n_install, test_install
    .quad n_ps2_mouse, test_ps2_mouse
    .quad n_ps2, test_ps2
    .quad n_firmware, test_firmware
    .quad n_journal, test_journal
    .quad n_snapbench, test_snapbench
    .quad n_snapshot, test_snapshot
    .quad n_migrate_storm, test_migrate_storm
    .quad n_migrate_100, test_migrate_100
    .quad n_migrate_idle, test_migrate_idle
    .quad n_migrate, test_migrate
    .quad 0, 0

/* ------------------------------------------------------------------------------------ */
    .section .data
    .align 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: kernel code, 64-bit */
    .quad 0x00cf92000000ffff    /* 0x10: kernel data */
gdt_tss:
    .quad 0x0000890000002068    /* 0x18: 64-bit TSS, limit = 104 + 8192 (base set at boot) */
    .quad 0
    .quad 0x00cff2000000ffff    /* 0x28: user data, DPL 3 */
    .quad 0x00affa000000ffff    /* 0x30: user code, 64-bit, DPL 3 */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt
    .align 16
idt_ptr:
    .word 4095
    .quad idt

    .align 8
boot_proto:     .quad 0
boot_ptr:       .quad 0
entry_cr0:      .quad 0
entry_cr4:      .quad 0
entry_efer:     .quad 0
cmdline:        .quad 0
rsdp_addr:      .quad 0
initrd_addr:    .quad 0
initrd_size:    .quad 0
sleep_port:     .quad 0
pm1a_cnt:       .quad 0
reset_port:     .quad 0
reset_value:    .quad 0
s5_type:        .quad 0
cpu_count:      .quad 0
bsp_apic_id:    .quad 0
ap_count:       .quad 0
ap_stack_next:  .quad ap_stacks
irq_count_serial: .quad 0
irq_count_ged:  .quad 0
irq_count_vio:  .quad 0
    .globl irq_count_timer
irq_count_timer: .quad 0
    .globl timer_period
timer_period:   .quad 0
vio_slot:       .quad 0
vio_nmatch:     .quad 0
vio_matches:    .skip 32 * 8
/* devices of the type found to skip back from the last one (input-tablet: 1) */
vio_skip_last:  .quad 0
vio_common:     .quad 0
vio_device:     .quad 0
vio_isr:        .quad 0
vio_use_msix:   .quad 1
vio_use_pic:    .quad 0
vio_notify:     .quad 0
vio_notify_mul: .quad 0
vio_msix_cap:   .quad 0
vio_msix_table: .quad 0
vio_q:          .quad 0
vio_nqueues:    .quad 1
vio_avail:      .quad 0, 0
vio_irqsnap:    .quad 0, 0
vio_qnotify:    .quad 0, 0
vio_features:   .quad 0
bench_lcg:      .quad 0
vio_move_to:    .quad 0
blk_capacity:   .quad 0
quiet:          .quad 0
serial_spin:    .quad 0
sigbuf:         .quad 0, 0
cpuid1_ebx:     .long 0
cpuid1_ecx:     .long 0
hv_max_leaf:    .long 0
hv_sig:         .quad 0, 0
hv_features:    .long 0
apic_ids:       .fill 64, 1, 0

/* Page tables: the low 4 GiB identity-mapped with 2 MiB pages, user-accessible
 * (P | RW | US, and PS in the page directories). */
    .align 4096
pml4:
    .quad pdpt + 7
    .fill 511, 8, 0
pdpt:
    .quad pd + 7
    .quad pd + 0x1000 + 7
    .quad pd + 0x2000 + 7
    .quad pd + 0x3000 + 7
    .fill 508, 8, 0
pd:
    .set page, 0
    .rept 2048
    .quad (page << 21) | 0x87
    .set page, page + 1
    .endr

/* 64-bit TSS with an all-open I/O permission bitmap (Intel SDM Vol. 1 §19.5.2). */
    .align 4096
tss:
    .long 0
    .quad 0, 0, 0               /* RSP0-2 */
    .quad 0                     /* reserved */
    .quad 0, 0, 0, 0, 0, 0, 0   /* IST1-7 */
    .quad 0                     /* reserved */
    .word 0
    .word 104                   /* I/O map base */
    .fill 8192, 1, 0
    .byte 0xff

    .align 4096
idt:
    .fill 4096, 1, 0

/* ------------------------------------------------------------------------------------ */
    .section .note.Xen, "a"
    .align 4
    .long 4                     /* name size */
    .long 4                     /* descriptor size */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_entry

/* ------------------------------------------------------------------------------------ */
    .section .bss
    .align 4096
boot_stack:     .skip 4096
boot_stack_top:
kstack:         .skip 16384
kstack_top:
ustack:         .skip 16384
ustack_top:
ap_stacks:      .skip 4096 * 64
/* Two virtqueues of 8 entries (virtio 1.2 §2.7), 4 KiB apart. */
    .align 4096
vq_rings:       .skip 2 * 4096
    .align 64
vio_buf:        .skip 64
net_mac:        .skip 8
blk_hdr:        .skip 16
blk_status:     .skip 16
    .align 512
blk_data:       .skip 512
blk_data2:      .skip 512
net_tx:         .skip 64
input_name:     .skip 136
input_led:      .skip 8
input_avail:    .skip 8
input_events:   .skip 64
gpu_req:        .skip 128
gpu_resp:       .skip 1104
gpu_req2:       .skip 64
gpu_resp2:      .skip 24
    .align 4096
gpu_fb:         .skip 128 * 96 * 4
gpu_cursor:     .skip 64 * 64 * 4
gpu_big_req:    .skip 24 + 8 + 16 * 2025
atapi_noswap:   .skip 8
qd_hdr:         .skip 32
qd_status:      .skip 16
atapi_cdb:      .skip 16
atapi_error:    .skip 8
atapi_text:     .skip 64
    .align 16
atapi_buf:      .skip 2048
    .align 64
net_rx:         .skip 2048
    .align 4096
bench_buf:      .skip 2025 * 4096   /* the blk bench's buffer, and the GPU bench's frame */
