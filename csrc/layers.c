/* The per-layer path's loops (layers.h): the float and double instances of layers_impl.h. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "clones.h"
#include "layers.h"

#define REAL float
#define SFX(name) name##_f32
#include "layers_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX(name) name##_f64
#include "layers_impl.h"
#undef REAL
#undef SFX
