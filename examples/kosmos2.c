/* examples/kosmos2.c - the kosmos2 command-line program. */
#define KOSMOS2_IMPLEMENTATION
#include "kosmos2.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--version"))) { printf("kosmos2 %s\n", KOSMOS2_VERSION); return 0; }
    fprintf(stderr, "usage: kosmos2 --version\n");
    return 2;
}
