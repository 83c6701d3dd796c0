/*-------------------------------------------------------------------------
 *
 * lark_webhooks.c
 *		Module set-up: settings, shared memory, worker registration, and
 *		the wake-up that a committing transaction sends to the worker.
 *
 * The library must be loaded through shared_preload_libraries: the worker
 * is registered and its shared state reserved while the postmaster starts.
 *
 *-------------------------------------------------------------------------
 */
#include "lark_webhooks.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/guc.h"
#include "utils/varlena.h"

PG_MODULE_MAGIC;

/* Settings; see the README for what each one means. */
char	   *lark_database = NULL;
int			lark_max_concurrency = 64;
int			lark_max_concurrency_per_webhook = 32;
int			lark_timeout_ms = 10000;
char	   *lark_retry_delays = NULL;
int			lark_max_webhooks_per_account = 5;
char	   *lark_allowed_networks = NULL;

int			lark_retry_count = 0;
int		   *lark_retry_delays_ms = NULL;

LarkSharedState *lark_shared = NULL;

/* Set by lark._wake_worker(); acted on when the transaction commits. */
static bool wake_at_commit = false;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* The parsed form of lark_webhooks.retry_delays, as a GUC "extra". */
typedef struct RetrySchedule
{
	int			count;
	int			delays_ms[FLEXIBLE_ARRAY_MEMBER];
} RetrySchedule;

/* Retry delays are capped so that a typo cannot park a delivery for years. */
#define LARK_MAX_RETRIES 25
#define LARK_MAX_RETRY_DELAY_MS (7 * 24 * 3600 * 1000)

void		_PG_init(void);

PG_FUNCTION_INFO_V1(lark_wake_worker);


/*
 * check hook for lark_webhooks.retry_delays: a comma-separated list of
 * durations such as '10s, 20s, 40s' (a bare number means milliseconds).
 * An empty list means "never retry".
 */
static bool
lark_check_retry_delays(char **newval, void **extra, GucSource source)
{
	char	   *rawstring;
	List	   *items;
	ListCell   *lc;
	RetrySchedule *schedule;
	int			i = 0;

	rawstring = pstrdup(*newval);
	if (!SplitGUCList(rawstring, ',', &items))
	{
		GUC_check_errdetail("List syntax is invalid.");
		pfree(rawstring);
		list_free(items);
		return false;
	}
	if (list_length(items) > LARK_MAX_RETRIES)
	{
		GUC_check_errdetail("At most %d retry delays can be given.",
							LARK_MAX_RETRIES);
		pfree(rawstring);
		list_free(items);
		return false;
	}

	/* A GUC "extra" must come from malloc, not palloc. */
	schedule = malloc(offsetof(RetrySchedule, delays_ms) +
					  sizeof(int) * Max(list_length(items), 1));
	if (schedule == NULL)
	{
		GUC_check_errmsg("out of memory");
		pfree(rawstring);
		list_free(items);
		return false;
	}

	foreach(lc, items)
	{
		char	   *item = (char *) lfirst(lc);
		const char *hint = NULL;
		int			ms;

		if (!parse_int(item, &ms, GUC_UNIT_MS, &hint) ||
			ms < 0 || ms > LARK_MAX_RETRY_DELAY_MS)
		{
			GUC_check_errdetail("\"%s\" is not a duration between 0 and 7 days.",
								item);
			GUC_check_errhint("Write durations with a unit, for example '10s, 20s, 40s'.");
			free(schedule);
			pfree(rawstring);
			list_free(items);
			return false;
		}
		schedule->delays_ms[i++] = ms;
	}
	schedule->count = i;

	pfree(rawstring);
	list_free(items);
	*extra = schedule;
	return true;
}

static void
lark_assign_retry_delays(const char *newval, void *extra)
{
	RetrySchedule *schedule = (RetrySchedule *) extra;

	lark_retry_count = schedule->count;
	lark_retry_delays_ms = schedule->delays_ms;
}

/* check hook for lark_webhooks.allowed_networks: a list of CIDR ranges. */
static bool
lark_check_allowed_networks(char **newval, void **extra, GucSource source)
{
	char	   *bad_entry = NULL;

	if (!lark_parse_networks(*newval, extra, &bad_entry))
	{
		if (bad_entry)
			GUC_check_errdetail("\"%s\" is not a network in CIDR notation.",
								bad_entry);
		GUC_check_errhint("Write a comma-separated list such as '127.0.0.0/8, ::1/128'.");
		return false;
	}
	return true;
}

static void
lark_assign_allowed_networks(const char *newval, void *extra)
{
	lark_set_allowed_networks(extra);
}

static void
lark_define_settings(void)
{
	DefineCustomStringVariable("lark_webhooks.database",
							   "Database whose deliveries the worker sends.",
							   NULL,
							   &lark_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("lark_webhooks.max_concurrency",
							"Most HTTP requests the worker has in flight at once.",
							NULL,
							&lark_max_concurrency,
							64, 1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("lark_webhooks.max_concurrency_per_webhook",
							"Most HTTP requests the worker has in flight to one webhook at once.",
							"Keeps a receiver that never answers from taking every slot.",
							&lark_max_concurrency_per_webhook,
							32, 1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("lark_webhooks.timeout",
							"Time a receiver has to answer one request, connecting included.",
							NULL,
							&lark_timeout_ms,
							10000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("lark_webhooks.retry_delays",
							   "Delays before each retry of a failed delivery.",
							   "One retry per entry; after the last one fails the delivery is dropped.",
							   &lark_retry_delays,
							   "10s,20s,40s",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   lark_check_retry_delays,
							   lark_assign_retry_delays,
							   NULL);

	DefineCustomIntVariable("lark_webhooks.max_webhooks_per_account",
							"Most webhooks one account can have, paused ones included.",
							NULL,
							&lark_max_webhooks_per_account,
							5, 0, 1000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("lark_webhooks.allowed_networks",
							   "Ranges the worker may reach although they are loopback, private or link-local.",
							   NULL,
							   &lark_allowed_networks,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   lark_check_allowed_networks,
							   lark_assign_allowed_networks,
							   NULL);

	MarkGUCPrefixReserved("lark_webhooks");
}

static void
lark_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(LarkSharedState)));
}

static void
lark_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	lark_shared = ShmemInitStruct("lark_webhooks", sizeof(LarkSharedState),
								  &found);
	if (!found)
	{
		SpinLockInit(&lark_shared->mutex);
		lark_shared->worker_pid = 0;
		lark_shared->worker_latch = NULL;
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Set the worker's latch, if a worker is running. */
static void
lark_wake_now(void)
{
	Latch	   *latch;

	if (lark_shared == NULL)
		return;

	SpinLockAcquire(&lark_shared->mutex);
	latch = lark_shared->worker_latch;
	SpinLockRelease(&lark_shared->mutex);

	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Wake the worker once the transaction that queued deliveries has
 * committed, so that it finds them at once; an aborted transaction leaves
 * nothing to find and sends no wake-up.
 */
static void
lark_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_at_commit)
				lark_wake_now();
			wake_at_commit = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
			/* A prepared transaction is picked up by the worker's poll. */
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/*
 * lark._wake_worker(): ask for the worker to be woken when the current
 * transaction commits.
 */
Datum
lark_wake_worker(PG_FUNCTION_ARGS)
{
	wake_at_commit = true;
	PG_RETURN_VOID();
}

void
_PG_init(void)
{
	BackgroundWorker worker;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("lark_webhooks must be loaded through shared_preload_libraries"),
				 errhint("Add lark_webhooks to shared_preload_libraries in postgresql.conf, then restart the server.")));

	lark_define_settings();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = lark_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = lark_shmem_startup;

	RegisterXactCallback(lark_xact_callback, NULL);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 2;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "lark_webhooks");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "lark_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "lark_webhooks delivery worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "lark_webhooks");
	RegisterBackgroundWorker(&worker);
}
