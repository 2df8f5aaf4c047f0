# Fallback TorchConfig for tools/gpu_check.sh: used only when the CMake config of a pip
# wheel of torch (torch/share/cmake/Torch) fails to configure. Pass
# -DTorch_DIR=<this folder> -DTORCH_INSTALL_PREFIX=<site-packages>/torch
# [-DTORCH_CXX11_ABI=0|1]. Defines target `torch`, TORCH_LIBRARIES, TORCH_CUDA_LIBRARIES,
# TORCH_INCLUDE_DIRS, like the real config.
if(NOT TORCH_INSTALL_PREFIX OR NOT EXISTS "${TORCH_INSTALL_PREFIX}/lib")
  message(FATAL_ERROR "fallback TorchConfig: set TORCH_INSTALL_PREFIX to the torch package folder")
endif()
if(NOT DEFINED TORCH_CXX11_ABI)
  set(TORCH_CXX11_ABI 1)
endif()
set(TORCH_INCLUDE_DIRS ${TORCH_INSTALL_PREFIX}/include
    ${TORCH_INSTALL_PREFIX}/include/torch/csrc/api/include)
foreach(_l torch torch_cpu c10 torch_cuda c10_cuda)
  find_library(TORCH_FALLBACK_${_l} ${_l} PATHS ${TORCH_INSTALL_PREFIX}/lib NO_DEFAULT_PATH REQUIRED)
endforeach()
find_package(CUDAToolkit REQUIRED)
if(NOT TARGET torch)
  add_library(torch SHARED IMPORTED)
  set_target_properties(torch PROPERTIES
    IMPORTED_LOCATION "${TORCH_FALLBACK_torch}"
    INTERFACE_INCLUDE_DIRECTORIES "${TORCH_INCLUDE_DIRS}"
    INTERFACE_COMPILE_DEFINITIONS "_GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI}"
    # torch_cuda registers the CUDA hooks at load time: keep it even though nothing
    # references it directly (--as-needed would drop it and at::hasCUDA() says false).
    INTERFACE_LINK_LIBRARIES
      "${TORCH_FALLBACK_torch_cpu};${TORCH_FALLBACK_c10};-Wl,--no-as-needed,${TORCH_FALLBACK_torch_cuda},--as-needed;${TORCH_FALLBACK_c10_cuda};CUDA::cudart")
endif()
set(TORCH_LIBRARIES torch)
set(TORCH_CUDA_LIBRARIES ${TORCH_FALLBACK_c10_cuda} ${TORCH_FALLBACK_torch_cuda})
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=${TORCH_CXX11_ABI}")
set(Torch_FOUND TRUE)
message(STATUS "Found Torch (fallback config): ${TORCH_FALLBACK_torch}")
