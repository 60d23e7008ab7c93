/*
 * The dialog engine's hooks into the layers below it.  The task layer
 * hands it every protocol message a task actor receives and asks it what
 * an exiting actor owes; the actor layer hands it protocol messages that
 * became dead letters.  Neither layer includes this one: tr_run calls
 * tr__rpc_init at start-up, which registers the functions below.
 */
#include "runtime/actor/actor.h"
#include "runtime/rpc/rpc.h"
#include "runtime/task/task.h"

void tr__rpc_init(void) {
  static const tr_tasks_rpc_ops_t ops = {tr__rpc_dispatch, tr__rpc_actor_exit, tr__rpc_actor_free};
  tr__tasks_set_rpc_ops(&ops);
  tr__actor_set_bounce(tr__rpc_bounce);
  /* The engine's per-actor state rides in each task actor's allocation. */
  if (tr__tasks_ext_size != sizeof(tr_rpc_t))
    tr__tasks_ext_size = sizeof(tr_rpc_t);
}
