/* timer.h - run a function once after a delay, on one timer thread.
 * For short callbacks only (answering a deferred call, a periodic sweep
 * that re-arms itself). */
#ifndef XA_TIMER_H
#define XA_TIMER_H

void xa_timer_start(void);
/* Stops the thread; pending timers run at once first. */
void xa_timer_stop(void);
void xa_timer_after(double seconds, void (*fn)(void *ctx), void *ctx);

#endif
