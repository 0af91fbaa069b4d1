/*
 * A polled virtio-pci driver (modern transport, virtio 1.2 §4.1) for C tests that drive a
 * device beside the one the assembly driver holds (which keeps a single device's state):
 * test=snapshot runs virtio-gpu through this while its disk goes through g_blk_request.
 * No interrupts: every queue has no MSI-X vector and asks for none, and a request waits
 * by polling its used ring.
 */
#include "guest.h"

static inline void barrier(void)
{
    __asm__ volatile("" : : : "memory");
}

static u32 pci_read(u32 slot, u32 reg)
{
    return pci_cfg_read(slot << 3, reg);
}

static void pci_write(u32 slot, u32 reg, u32 value)
{
    pci_cfg_write(slot << 3, reg, value);
}

static u64 bar_address(u32 slot, u32 bar)
{
    u32 low = pci_read(slot, 0x10 + bar * 4);
    u64 address = low & ~0xfu;
    if ((low & 6) == 4)
        address |= (u64)pci_read(slot, 0x14 + bar * 4) << 32;
    return address;
}

/* Queue memory: a page a queue (descriptors, then the driver area at 256, the device
 * area at 2048), for up to V_MAX_QUEUES queues of V_MAX_DEVICES devices. */
#define V_MAX_DEVICES 2
static u8 rings[V_MAX_DEVICES][V_MAX_QUEUES][4096] __attribute__((aligned(4096)));
static u32 devices_started;

#define DESCS 0
#define AVAIL 256
#define USED 2048

static void fail(const char *what, u64 value)
{
    report(what, value);
    g_power_off();
}

void v_find(struct vdev *d, u32 device_id)
{
    memset(d, 0, sizeof *d);
    for (u32 slot = 0; slot < 32; slot++) {
        if (pci_read(slot, 0) == (device_id << 16 | 0x1af4)) {
            d->slot = slot;
            break;
        }
        if (slot == 31)
            fail("VIRTIO MISSING ", device_id);
    }
    /* Memory decode and bus mastering. */
    pci_write(d->slot, 0x04, pci_read(d->slot, 0x04) | 0x6);
    /* The vendor capabilities (§4.1.4): where each structure lies. */
    u32 at = pci_read(d->slot, 0x34) & 0xfc;
    for (int hops = 0; at >= 0x40 && hops < 48; hops++) {
        u32 head = pci_read(d->slot, at);
        if ((head & 0xff) == 0x09) {
            u32 type = head >> 24;
            u64 base = bar_address(d->slot, pci_read(d->slot, at + 4) & 0xff) +
                       pci_read(d->slot, at + 8);
            if (type == 1)
                d->common = (volatile u8 *)base;
            else if (type == 2) {
                d->notify = (volatile u8 *)base;
                d->notify_mul = pci_read(d->slot, at + 16);
            } else if (type == 4)
                d->config = (volatile u8 *)base;
        }
        at = (head >> 8) & 0xfc;
    }
    if (!d->common || !d->notify)
        fail("VIRTIO NO STRUCTURES ", device_id);
}

void v_start(struct vdev *d, u32 queues)
{
    volatile u8 *c = d->common;
    if (devices_started == V_MAX_DEVICES || queues > V_MAX_QUEUES)
        fail("VIRTIO TOO MANY ", queues);
    u32 n = devices_started++;
    /* §3.1.1: reset, ACKNOWLEDGE, DRIVER, features (VERSION_1 alone), FEATURES_OK. */
    c[0x14] = 0;
    c[0x14] = 1;
    c[0x14] = 3;
    *(volatile u32 *)(c + 0x00) = 1;
    if (!(*(volatile u32 *)(c + 0x04) & 1))
        fail("VIRTIO NO VERSION_1 ", d->slot);
    *(volatile u32 *)(c + 0x08) = 0;
    *(volatile u32 *)(c + 0x0c) = 0;
    *(volatile u32 *)(c + 0x08) = 1;
    *(volatile u32 *)(c + 0x0c) = 1;
    c[0x14] = 3 | 8;
    if (!(c[0x14] & 8))
        fail("VIRTIO FEATURES REFUSED ", d->slot);
    *(volatile u16 *)(c + 0x10) = 0xffff; /* no vector for configuration changes */
    for (u32 q = 0; q < queues; q++) {
        struct vqueue *vq = &d->queues[q];
        u8 *ring = rings[n][q];
        memset(ring, 0, 4096);
        *(volatile u16 *)(c + 0x16) = q;
        u16 size = *(volatile u16 *)(c + 0x18);
        if (size == 0)
            fail("VIRTIO NO QUEUE ", q);
        vq->size = size < 8 ? size : 8;
        *(volatile u16 *)(c + 0x18) = vq->size;
        *(volatile u16 *)(c + 0x1a) = 0xffff;
        *(volatile u64 *)(c + 0x20) = (u64)(ring + DESCS);
        *(volatile u64 *)(c + 0x28) = (u64)(ring + AVAIL);
        *(volatile u64 *)(c + 0x30) = (u64)(ring + USED);
        u16 off = *(volatile u16 *)(c + 0x1e);
        vq->notify = (volatile u16 *)(d->notify + (u64)off * d->notify_mul);
        vq->ring = ring;
        vq->avail = 0;
        /* VIRTQ_AVAIL_F_NO_INTERRUPT: the driver polls. */
        *(volatile u16 *)(ring + AVAIL) = 1;
        *(volatile u16 *)(c + 0x1c) = 1;
    }
    c[0x14] = 3 | 8 | 4; /* DRIVER_OK */
}

u32 v_request(struct vdev *d, u32 q, const void *out, u32 out_len, void *in, u32 in_len)
{
    struct vqueue *vq = &d->queues[q];
    volatile u8 *desc = vq->ring + DESCS;
    /* Descriptor 0 the request, 1 the response (split virtqueue, §2.7.5). */
    *(volatile u64 *)(desc + 0) = (u64)out;
    *(volatile u32 *)(desc + 8) = out_len;
    *(volatile u16 *)(desc + 12) = in_len ? 1 : 0; /* NEXT */
    *(volatile u16 *)(desc + 14) = 1;
    *(volatile u64 *)(desc + 16) = (u64)in;
    *(volatile u32 *)(desc + 24) = in_len;
    *(volatile u16 *)(desc + 28) = 2; /* WRITE */
    *(volatile u16 *)(desc + 30) = 0;
    volatile u16 *avail = (volatile u16 *)(vq->ring + AVAIL);
    avail[2 + vq->avail % vq->size] = 0;
    barrier();
    vq->avail++;
    avail[1] = vq->avail;
    barrier();
    *vq->notify = q;
    volatile u16 *used_idx = (volatile u16 *)(vq->ring + USED + 2);
    while (*used_idx != vq->avail)
        pause();
    barrier();
    /* The used element's length: what the device wrote. */
    return *(volatile u32 *)(vq->ring + USED + 4 + ((vq->avail - 1) % vq->size) * 8 + 4);
}
