/* What the SSE-300 platforms share (QEMU's mps3-an547, the Corstone-300 FVP, MPS3 boards): startup,
 * vector table, CMSDK UART0, SysTick, semihosting exit. A port adds its name, its init (the NPU on
 * corstone300) and its counters. Under QEMU -icount the SysTick counts the 32 MHz system clock of
 * virtual time, i.e. about one tick per instruction. */
#include <stdint.h>
#include <sys/types.h>

#include "benchmark.h"
#include "sse300.h"

#define UART0 0x59303000u  /* secure alias: the firmware runs secure, without TrustZone setup */
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
/* QEMU's mps3-an547 model clocks the APB peripherals at 25 MHz (hw/arm/mps2-tz.c, apb_periph_frq); for
 * the Corstone-300 FVP and MPS3 boards 25 MHz is assumed. */
#define UART_CLOCK_HZ 25000000u
#ifndef UDC_BAUD
#error "UDC_BAUD is not defined: firmware/CMakeLists.txt passes it (cache variable UDC_BAUD)"
#endif
#define UART_DIVIDER (UART_CLOCK_HZ / (UDC_BAUD))
_Static_assert(UART_DIVIDER >= 16, "UDC_BAUD too high: the CMSDK UART baud divider must be at least 16");

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top, __heap_start, __heap_end;
int main(void);

static volatile uint32_t systick_wraps;

static void SysTick_Handler(void) { systick_wraps++; }

static void hang(void) { th_exit(3); }

/* a port that uses an interrupt (the NPU's on corstone300) defines it; others never enable it */
void NPU_IRQHandler(void) __attribute__((weak, alias("hang_irq")));
void hang_irq(void) { hang(); }

void Reset_Handler(void) {  /* global: the linker script's entry point */
    for (uint32_t *from = &__data_load, *to = &__data_start; to < &__data_end;) *to++ = *from++;
    for (uint32_t *to = &__bss_start; to < &__bss_end;) *to++ = 0;
    CPACR |= 0xFu << 20;  /* FPU and MVE on before any compiled code may use them */
    __asm volatile("dsb\n isb");
    UART_BAUDDIV = UART_DIVIDER;
    UART_CTRL = 0x3;  /* TX and RX */
    SYST_RVR = SYSTICK_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = 0x7;  /* processor clock, interrupt, enable */
    th_exit(main());
}

/* 16 system exceptions, then external interrupts up to the NPU's */
__attribute__((section(".vectors"), used)) static void (*const vectors[16 + NPU_IRQ + 1])(void) = {
    [0] = (void (*)(void))&__stack_top, [1] = Reset_Handler, [2] = hang, [3] = hang, [4] = hang, [5] = hang,
    [6] = hang, [11] = hang, [12] = hang, [14] = hang, [15] = SysTick_Handler,
    [16 ... 16 + NPU_IRQ - 1] = hang_irq, [16 + NPU_IRQ] = NPU_IRQHandler,
};

void sse300_enable_irq(unsigned irq) {
    ((volatile uint32_t *)0xE000E100u)[irq / 32] = 1u << (irq % 32);  /* NVIC_ISER */
    __asm volatile("cpsie i" ::: "memory");
}

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
    const char *error = sse300_port_init();
    benchmark_main(error);
    return 0;
}
