# Corstone-300 with an Ethos-U55: the shared SSE-300 code and memory map, plus the Ethos-U core driver
# from ETHOSU_DRIVER (a checkout of ethos-u-core-driver). A TFLM library built with CO_PROCESSOR=ethos_u
# already holds the driver's objects, so its sources are compiled here only for a build without TFLM.
set(ETHOSU_DRIVER "" CACHE PATH "ethos-u-core-driver checkout (NPU builds)")
set(PLATFORM_SOURCES ${PLATFORM_DIR}/port.c ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300/sse300.c)
set(PLATFORM_INCLUDES ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300)
set(PLATFORM_LINKER_SCRIPT ${CMAKE_CURRENT_SOURCE_DIR}/platform/sse300/sse300.ld)
if(ETHOSU_DRIVER)
  list(APPEND PLATFORM_INCLUDES ${ETHOSU_DRIVER}/include)
  set(PLATFORM_DEFINITIONS UDC_ETHOSU ETHOSU55 ETHOSU_ARCH=u55)
  if(NOT TFLM_LIBRARY)
    list(APPEND PLATFORM_SOURCES ${ETHOSU_DRIVER}/src/ethosu_driver.c ${ETHOSU_DRIVER}/src/ethosu_pmu.c
         ${ETHOSU_DRIVER}/src/ethosu_device_u55_u65.c)
    list(APPEND PLATFORM_INCLUDES ${ETHOSU_DRIVER}/src)
  endif()
endif()
