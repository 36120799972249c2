/* The an547 port: startup, CMSDK UART0, SysTick, semihosting exit. Under QEMU -icount the SysTick
 * counts the 32 MHz system clock of virtual time, i.e. about one tick per instruction. */
#include <stdint.h>
#include <sys/types.h>

#include "benchmark.h"

#define UART0 0x59303000u
#define UART_DATA (*(volatile uint32_t *)(UART0 + 0x00))
#define UART_STATE (*(volatile uint32_t *)(UART0 + 0x04))
#define UART_CTRL (*(volatile uint32_t *)(UART0 + 0x08))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART0 + 0x10))
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SYSTICK_RELOAD 0xFFFFFFu
#define CLOCK_HZ 32000000u

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top, __heap_start, __heap_end;
int main(void);

static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

static void hang(void) { th_exit(3); }

void Reset_Handler(void) {
    for (uint32_t *from = &__data_load, *to = &__data_start; to < &__data_end;) *to++ = *from++;
    for (uint32_t *to = &__bss_start; to < &__bss_end;) *to++ = 0;
    CPACR |= 0xFu << 20;  /* FPU and MVE on before any compiled code may use them */
    __asm volatile("dsb\n isb");
    UART_BAUDDIV = 16;
    UART_CTRL = 0x3;  /* TX and RX */
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 0x7;  /* processor clock, interrupt, enable */
    th_exit(main());
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__stack_top, Reset_Handler, hang, hang, hang, hang, hang, 0, 0, 0, 0, hang, hang, 0, hang,
    SysTick_Handler,
};

int th_getchar(void) {
    while (!(UART_STATE & 0x2u)) {}
    return (int)(UART_DATA & 0xFFu);
}

void th_putchar(char c) {
    while (UART_STATE & 0x1u) {}
    UART_DATA = (uint32_t)(unsigned char)c;
}

uint64_t th_ticks(void) {
    uint32_t wraps, value;
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return (uint64_t)wraps * (SYSTICK_RELOAD + 1u) + (SYSTICK_RELOAD - value);
}

uint32_t th_ticks_per_us(void) { return CLOCK_HZ / 1000000u; }

const char *th_platform_name(void) { return "an547"; }

void th_exit(int code) {
    /* semihosting SYS_EXIT_EXTENDED: QEMU exits with the firmware's code */
    volatile uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
    register uint32_t operation __asm("r0") = 0x20u;
    register volatile uint32_t *argument __asm("r1") = block;
    __asm volatile("bkpt 0xab" : : "r"(operation), "r"(argument) : "memory");
    for (;;) {}
}

/* newlib's allocator (vsnprintf may call it) grows into the linker's heap region */
void *_sbrk(ptrdiff_t increment) {
    static char *top = (char *)&__heap_start;
    if (top + increment > (char *)&__heap_end) return (void *)-1;
    char *previous = top;
    top += increment;
    return previous;
}

int main(void) {
    benchmark_main();
    return 0;
}
