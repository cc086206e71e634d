/*
 * agent_impl.h — internals shared by the agent module's files.
 */
#ifndef PU_AGENT_IMPL_H
#define PU_AGENT_IMPL_H

#include <signal.h>

/* Block SIGPIPE on the calling thread around writes to a child's pipe, and
 * restore the old mask (discarding a SIGPIPE raised meanwhile). */
void pu_agent_sigpipe_block(sigset_t *old);
void pu_agent_sigpipe_restore(const sigset_t *old);

#endif
