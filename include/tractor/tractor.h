/* Umbrella header: everything public in tractor-c. */
#ifndef TRACTOR_TRACTOR_H
#define TRACTOR_TRACTOR_H

#include "actor.h"
#include "buf.h"
#include "discovery.h"
#include "errors.h"
#include "log.h"
#include "portal.h"
#include "pubsub.h"
#include "task.h"
#include "time.h"
#include "version.h"

#endif
