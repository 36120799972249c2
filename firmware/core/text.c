/* Number formatting for the protocol's replies (text.h). */
#include "text.h"

const char *text_uint64(uint64_t value, char digits[24]) {
    char *end = digits + 23;
    *end = '\0';
    do {
        *--end = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    return end;
}

/* Below this magnitude the thousandths fit a uint64_t exactly; every dequantised int8 output does. */
#define FIXED3_EXACT_LIMIT 1e15

const char *text_fixed3(float value, char text[TEXT_FIXED3_SIZE]) {
    char *out = text;
    if (value != value) {
        text[0] = 'n', text[1] = 'a', text[2] = 'n', text[3] = '\0';
        return text;
    }
    if (value < 0) *out++ = '-';
    /* A float has 24 significant bits, so magnitude * 1000 (10 more bits) and + 0.5 are exact in a
     * double: truncating then rounds the float's exact value half away from zero. */
    double magnitude = value < 0 ? -(double)value : (double)value;
    if (magnitude > 3.5e38) {
        out[0] = 'i', out[1] = 'n', out[2] = 'f', out[3] = '\0';
        return text;
    }
    /* From FIXED3_EXACT_LIMIT up (no dequantised int8 output gets there) a magnitude keeps its first 15
     * digits, rounded; the rest of the integer part is written as zeros, the decimals as .000. */
    unsigned zeros = 0;
    while (magnitude >= FIXED3_EXACT_LIMIT) {
        magnitude /= 10;
        zeros++;
    }
    uint64_t thousandths = zeros ? (uint64_t)(magnitude + 0.5) * 1000 : (uint64_t)(magnitude * 1000.0 + 0.5);
    char digits[24];
    for (const char *c = text_uint64(thousandths / 1000, digits); *c;) *out++ = *c++;
    while (zeros--) *out++ = '0';
    unsigned fraction = (unsigned)(thousandths % 1000);
    *out++ = '.';
    *out++ = (char)('0' + fraction / 100);
    *out++ = (char)('0' + fraction / 10 % 10);
    *out++ = (char)('0' + fraction % 10);
    *out = '\0';
    return text;
}
