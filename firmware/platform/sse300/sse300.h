/* The interface between the shared SSE-300 code (sse300.c) and a port (an547, corstone300). */
#ifndef UDC_SSE300_H
#define UDC_SSE300_H

#define NPU_IRQ 56  /* Ethos-U55 interrupt on SSE-300 */
#define NPU_BASE 0x58102000u  /* Ethos-U55 registers, secure alias */

const char *sse300_port_init(void);  /* NULL, or why the platform is unusable (reported as e-[...]) */
void sse300_enable_irq(unsigned irq);
void NPU_IRQHandler(void);

#endif
