// The one rules parser is shim/rules.c; this package compiles it too.
#include "../rules.c"
