/* The libc functions a freestanding build may call (GCC emits calls to them for struct
 * copies and large initialisers even when the code never names them). */
#include "guest.h"

void *memset(void *dst, int byte, size_t len)
{
    u8 *d = dst;
    while (len--)
        *d++ = (u8)byte;
    return dst;
}

void *memcpy(void *dst, const void *src, size_t len)
{
    u8 *d = dst;
    const u8 *s = src;
    while (len--)
        *d++ = *s++;
    return dst;
}

int memcmp(const void *a, const void *b, size_t len)
{
    const u8 *x = a, *y = b;
    for (; len; len--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}
