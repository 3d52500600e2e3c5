/* Which compiler built the core, for `python -m mlm.egg info` and experiment logs. */
#include "egg.h"

const char *egg_compiler(void) {
#if defined(__clang__)
    return __VERSION__; /* clang's names itself: "Apple LLVM 15.0.0 (clang-1500...)", "Clang 18.1.3" */
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#else
    return "unknown C compiler";
#endif
}
