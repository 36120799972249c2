/* Number formatting without printf's %llu and %f (newlib-nano has neither). Pure functions: no I/O. */
#ifndef UDC_TEXT_H
#define UDC_TEXT_H

#include <stdint.h>

#define TEXT_FIXED3_SIZE 48  /* the largest float: a sign, 39 digits, ".000" */

/* value in decimal, written at the end of digits; returns where it starts */
const char *text_uint64(uint64_t value, char digits[24]);

/* value with exactly three decimals, as printf("%0.3f") prints it (-0.500, 12.345), rounded half away
 * from zero; "nan", "inf" or "-inf" when it is not finite; returns text */
const char *text_fixed3(float value, char text[TEXT_FIXED3_SIZE]);

#endif
