/* Version of the tractor-c headers.  Keep in step with project() in
 * CMakeLists.txt (the build checks it). */
#ifndef TRACTOR_VERSION_H
#define TRACTOR_VERSION_H

#define TR_VERSION_MAJOR 0
#define TR_VERSION_MINOR 1
#define TR_VERSION_PATCH 0
#define TR_VERSION_STRING "0.1.0"

#endif
