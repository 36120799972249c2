# QEMU mps3-an547: the shared SSE-300 code and memory map, no NPU.
set(PLATFORM_SOURCES ${PLATFORM_DIR}/port.c ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300/sse300.c)
set(PLATFORM_INCLUDES ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300)
set(PLATFORM_LINKER_SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300/sse300.ld)
