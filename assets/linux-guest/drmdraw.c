/* drmdraw: a tiny KMS client for the default Linux guest, built static by build.sh.
 *
 * It does what a display server does with a "dumb" buffer: finds the first connected
 * connector and its preferred mode, creates a buffer, adds a framebuffer, sets the CRTC,
 * draws, and reports a damaged rectangle with DIRTYFB. Then it waits for the connector's
 * preferred mode to change (the host resizing the display) and prints it.
 *
 * Output lines: "DRM MODE <w>x<h>", "DRM DRAWN", "DRM DAMAGED", "DRM WAIT RESIZE",
 * "DRM MODE <w>x<h>" (or "DRM RESIZE TIMEOUT"); errors as "DRM FAIL <what>: <errno>".
 *
 * The picture: row 0 white, row 15 grey (0x80), everything else black; then a white
 * 16x8 rectangle at (32, 16), reported alone with DIRTYFB. Pixels are XRGB8888. */
#include <drm.h> /* libdrm-dev ships the kernel's DRM uapi headers */
#include <drm_mode.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int fd;

static void fail(const char *what) {
    printf("DRM FAIL %s: %d\n", what, errno);
    exit(1);
}

static void drm(unsigned long request, void *arg, const char *what) {
    while (ioctl(fd, request, arg) < 0) {
        if (errno != EINTR && errno != EAGAIN)
            fail(what);
    }
}

/* The connector's modes (probing it again, as a display server does on hotplug). */
static struct drm_mode_modeinfo *modes(uint32_t connector, struct drm_mode_get_connector *c) {
    memset(c, 0, sizeof(*c));
    c->connector_id = connector;
    drm(DRM_IOCTL_MODE_GETCONNECTOR, c, "getconnector");
    struct drm_mode_modeinfo *m = calloc(c->count_modes ? c->count_modes : 1, sizeof(*m));
    uint32_t n = c->count_modes;
    memset(c, 0, sizeof(*c));
    c->connector_id = connector;
    c->count_modes = n;
    c->modes_ptr = (uintptr_t)m;
    drm(DRM_IOCTL_MODE_GETCONNECTOR, c, "getconnector");
    return m;
}

int main(void) {
    fd = open("/dev/dri/card0", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        fail("open /dev/dri/card0");

    struct drm_mode_card_res res = {0};
    drm(DRM_IOCTL_MODE_GETRESOURCES, &res, "getresources");
    uint32_t *crtcs = calloc(res.count_crtcs + 1, 4), *conns = calloc(res.count_connectors + 1, 4);
    res.crtc_id_ptr = (uintptr_t)crtcs;
    res.connector_id_ptr = (uintptr_t)conns;
    res.count_fbs = res.count_encoders = 0;
    drm(DRM_IOCTL_MODE_GETRESOURCES, &res, "getresources");
    if (res.count_connectors == 0 || res.count_crtcs == 0)
        fail("no connector or crtc");

    struct drm_mode_get_connector c;
    struct drm_mode_modeinfo *m = modes(conns[0], &c);
    if (c.connection != 1 || c.count_modes == 0)
        fail("connector not connected");
    struct drm_mode_modeinfo mode = m[0]; /* the preferred mode comes first */
    printf("DRM MODE %ux%u\n", mode.hdisplay, mode.vdisplay);
    fflush(stdout);

    struct drm_mode_create_dumb dumb = {.width = mode.hdisplay, .height = mode.vdisplay, .bpp = 32};
    drm(DRM_IOCTL_MODE_CREATE_DUMB, &dumb, "create_dumb");
    struct drm_mode_fb_cmd fb = {.width = dumb.width, .height = dumb.height, .pitch = dumb.pitch,
                                 .bpp = 32, .depth = 24, .handle = dumb.handle};
    drm(DRM_IOCTL_MODE_ADDFB, &fb, "addfb");
    struct drm_mode_map_dumb map = {.handle = dumb.handle};
    drm(DRM_IOCTL_MODE_MAP_DUMB, &map, "map_dumb");
    uint8_t *pixels = mmap(0, dumb.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, map.offset);
    if (pixels == MAP_FAILED)
        fail("mmap");
    memset(pixels, 0, dumb.size);
    memset(pixels, 0xff, dumb.pitch);
    memset(pixels + 15 * dumb.pitch, 0x80, dumb.pitch);

    struct drm_mode_crtc crtc = {.crtc_id = crtcs[0], .fb_id = fb.fb_id,
                                 .set_connectors_ptr = (uintptr_t)&conns[0],
                                 .count_connectors = 1, .mode = mode, .mode_valid = 1};
    drm(DRM_IOCTL_MODE_SETCRTC, &crtc, "setcrtc");
    printf("DRM DRAWN\n");
    fflush(stdout);

    sleep(1); /* the host looks at the frame, then at the rectangle's damage */
    for (int y = 16; y < 24; y++)
        memset(pixels + y * dumb.pitch + 32 * 4, 0xff, 16 * 4);
    struct drm_clip_rect clip = {.x1 = 32, .y1 = 16, .x2 = 48, .y2 = 24};
    struct drm_mode_fb_dirty_cmd dirty = {.fb_id = fb.fb_id, .num_clips = 1,
                                          .clips_ptr = (uintptr_t)&clip};
    drm(DRM_IOCTL_MODE_DIRTYFB, &dirty, "dirtyfb");
    printf("DRM DAMAGED\n");
    printf("DRM WAIT RESIZE\n");
    fflush(stdout);

    for (int i = 0; i < 200; i++) {
        struct timespec tick = {0, 50 * 1000 * 1000};
        nanosleep(&tick, 0);
        m = modes(conns[0], &c);
        if (c.count_modes && (m[0].hdisplay != mode.hdisplay || m[0].vdisplay != mode.vdisplay)) {
            printf("DRM MODE %ux%u\n", m[0].hdisplay, m[0].vdisplay);
            return 0;
        }
    }
    printf("DRM RESIZE TIMEOUT\n");
    return 1;
}
