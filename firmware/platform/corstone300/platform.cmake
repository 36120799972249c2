# Corstone-300 with an Ethos-U55: the shared SSE-300 code and memory map, plus the Ethos-U core driver's
# headers from ETHOSU_DRIVER (a checkout of ethos-u-core-driver). Its code comes with TFLM's library built
# with CO_PROCESSOR=ethos_u (python -m harness firmware setup --ethos-u), so the NPU build needs TFLM.
set(ETHOSU_DRIVER "" CACHE PATH "ethos-u-core-driver checkout (NPU builds)")
set(PLATFORM_SOURCES ${PLATFORM_DIR}/port.c ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300/sse300.c)
set(PLATFORM_INCLUDES ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300)
set(PLATFORM_LINKER_SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300/sse300.ld)
if(ETHOSU_DRIVER)
  if(NOT TFLM_LIBRARY)
    message(FATAL_ERROR "ETHOSU_DRIVER needs TFLM_LIBRARY: a TFLM library built with the Ethos-U driver")
  endif()
  list(APPEND PLATFORM_INCLUDES ${ETHOSU_DRIVER}/include)
  set(PLATFORM_DEFINITIONS UDC_ETHOSU ETHOSU55 ETHOSU_ARCH=u55)
endif()
