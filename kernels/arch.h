// What the library's compiled device code can run on the current device, for the launchers' choice of kernels.
// Declared in every build; defined only when CUDA is built.
#pragma once

namespace evident::kernels {

// Whether the kernels on Hopper warpgroup MMAs (wgmma: the MoE prefill tiling, the attention prefill default, the
// gated delta rule v15) can run here: the current device is compute capability 9.0 and the library was built for
// sm_90a. Host only; cached after the first call (per process, for the device current then).
bool wgmma_available();

}  // namespace evident::kernels
