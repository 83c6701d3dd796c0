/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The delivery worker: claims due deliveries, sends them through the
 *		HTTP engine and records every attempt.
 *
 * The loop alternates between two kinds of work and never mixes them:
 *
 *	- a short transaction that writes the outcome of every finished
 *	  attempt, then claims as many due deliveries as there are free slots
 *	  (FOR UPDATE SKIP LOCKED), marking them in_flight;
 *	- outside any transaction, the requests for the claimed deliveries go
 *	  out, and the worker sleeps until a socket is ready, libcurl's timer
 *	  fires, a committing transaction sets our latch, or the next retry
 *	  falls due.
 *
 * No transaction, snapshot or lock is held while HTTP is in flight, so the
 * worker never stands in the way of DROP EXTENSION or of anyone's query.
 *
 * Delivery is at least once.  A delivery is in_flight only while this
 * process has its request; when the worker starts (after a crash, a kill or
 * a server restart) every in_flight row is queued again and sent with the
 * same delivery id, which receivers use to drop duplicates.
 *
 *-------------------------------------------------------------------------
 */
#include "lark_webhooks.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "http.h"

/* How long to sleep with nothing to do: a safety net, not the mechanism. */
#define IDLE_POLL_MS (60 * 1000)

/* How often to look for the extension while it is not installed. */
#define MISSING_POLL_MS (10 * 1000)

/* How soon to look again at a due delivery whose row was locked. */
#define LOCKED_RETRY_MS 1000

/* Longest pause after a run of errors. */
#define MAX_ERROR_BACKOFF_MS (60 * 1000)

/*
 * Pick the oldest due deliveries of active webhooks and mark them
 * in_flight, returning what their requests need.  $1 is the number of free
 * slots; $2 and $3 list the webhooks with requests in flight and how many;
 * $4 is the most one webhook may have in flight.  Webhooks already at $4 are
 * skipped, and no webhook gets more than its remaining slots, so that one
 * receiver that never answers cannot take every slot.
 *
 * The candidates are locked as they are found (SKIP LOCKED), so that rows
 * another transaction holds cannot use up the batch, and only rows the
 * final join will find (an event and a secret exist) count.  They walk
 * deliveries_due_idx in order and stop early, whatever the statistics say
 * about the queue's length: the checks are scalar subqueries because an
 * EXISTS would be flattened into a join, and a planner that believes the
 * queue empty (it often does, between two autovacuum runs) then sorts
 * every due row to take the first few.
 */
static const char *const claim_sql =
"WITH busy AS ("
"  SELECT * FROM unnest($2::text[], $3::int4[]) AS b(webhook_id, n)"
"), candidates AS ("
"  SELECT d.id, d.webhook_id, d.next_attempt_at"
"    FROM lark.deliveries d"
"   WHERE d.status = 'pending' AND d.next_attempt_at <= now()"
"     AND NOT d.webhook_id = ANY (ARRAY(SELECT webhook_id FROM busy"
"                                        WHERE n >= $4))"
"     AND (SELECT w.active AND s.secret IS NOT NULL"
"            FROM lark.webhooks w"
"            LEFT JOIN lark.webhook_secrets s ON s.webhook_id = w.id"
"           WHERE w.id = d.webhook_id)"
"     AND (SELECT true FROM lark.events e WHERE e.id = d.event_id)"
"   ORDER BY d.next_attempt_at"
"   LIMIT $1 * 2"
"     FOR UPDATE OF d SKIP LOCKED"
"), picked AS ("
"  SELECT c.id"
"    FROM (SELECT c.*, row_number() OVER (PARTITION BY c.webhook_id"
"                                         ORDER BY c.next_attempt_at) AS k"
"            FROM candidates c) c"
"    LEFT JOIN busy b ON b.webhook_id = c.webhook_id"
"   WHERE c.k + coalesce(b.n, 0) <= $4"
"   ORDER BY c.next_attempt_at"
"   LIMIT $1"
"), due AS ("
"  SELECT d.id"
"    FROM lark.deliveries d"
"   WHERE d.id = ANY (ARRAY(SELECT id FROM picked)) AND d.status = 'pending'"
") "
"UPDATE lark.deliveries d"
"   SET status = 'in_flight'"
"  FROM due, lark.webhooks w, lark.webhook_secrets s, lark.events e"
" WHERE d.id = due.id AND w.id = d.webhook_id AND s.webhook_id = w.id"
"   AND e.id = d.event_id "
"RETURNING d.id, d.webhook_id, d.attempts, w.url, s.secret, e.event, e.body";

/*
 * When the earliest delivery the claim could take falls due: the same rows
 * as the claim, without the time condition, and for the same reason
 * written with scalar subqueries.  $1 lists the webhooks that have no slot
 * left; their deliveries wait for one of their requests to finish.
 */
static const char *const next_due_sql =
"SELECT d.next_attempt_at"
"  FROM lark.deliveries d"
" WHERE d.status = 'pending'"
"   AND NOT d.webhook_id = ANY ($1::text[])"
"   AND (SELECT w.active AND s.secret IS NOT NULL"
"          FROM lark.webhooks w"
"          LEFT JOIN lark.webhook_secrets s ON s.webhook_id = w.id"
"         WHERE w.id = d.webhook_id)"
"   AND (SELECT true FROM lark.events e WHERE e.id = d.event_id)"
" ORDER BY d.next_attempt_at"
" LIMIT 1";

/*
 * Record a batch of finished attempts, given as parallel arrays, and
 * return the deliveries that have now failed for good.  A delivery that
 * was cancelled while in flight (its webhook was deleted) stays cancelled,
 * but its attempt is counted and recorded all the same.
 */
static const char *const record_sql =
"WITH r AS ("
"  SELECT *"
"    FROM unnest($1::text[], $2::int4[], $3::timestamptz[], $4::float8[],"
"                $5::int4[], $6::text[], $7::bytea[], $8::text[],"
"                $9::timestamptz[])"
"      AS r(delivery_id, attempt, started_at, duration_ms, http_status,"
"           error, excerpt, status, next_attempt_at)"
"), logged AS ("
"  INSERT INTO lark.delivery_attempts"
"         (delivery_id, attempt, started_at, duration_ms, http_status,"
"          error, response_excerpt)"
"  SELECT r.delivery_id, r.attempt, r.started_at, r.duration_ms,"
"         r.http_status, r.error, r.excerpt"
"    FROM r"
"   WHERE EXISTS (SELECT 1 FROM lark.deliveries d WHERE d.id = r.delivery_id)"
"  ON CONFLICT DO NOTHING"
"), updated AS ("
"  UPDATE lark.deliveries d"
"     SET status = CASE WHEN d.status = 'cancelled' THEN d.status"
"                       ELSE r.status END,"
"         attempts = r.attempt,"
"         next_attempt_at = CASE WHEN d.status = 'cancelled' THEN NULL"
"                                ELSE r.next_attempt_at END,"
"         last_http_status = r.http_status,"
"         last_error = CASE WHEN d.status = 'cancelled' THEN d.last_error"
"                           ELSE r.error END,"
"         finished_at = CASE WHEN d.status = 'cancelled' THEN d.finished_at"
"                            WHEN r.status = 'pending' THEN NULL"
"                            ELSE clock_timestamp() END"
"    FROM r"
"   WHERE d.id = r.delivery_id AND d.status IN ('in_flight', 'cancelled')"
"  RETURNING d.id, d.status"
") "
"SELECT id FROM updated WHERE status = 'failed'";

static const char *const requeue_sql =
"UPDATE lark.deliveries SET status = 'pending' WHERE status = 'in_flight'";

/* An entry of WorkerState.inflight. */
typedef struct InflightEntry
{
	char		webhook_id[NAMEDATALEN];	/* hash key */
	int			count;
} InflightEntry;

/* The worker's state between iterations of its loop. */
typedef struct WorkerState
{
	bool		serving;		/* extension present, plans ready */
	bool		logged_missing; /* said once that the extension is missing */
	bool		claim_wanted;	/* look for due deliveries at the next sync */
	TimestampTz next_due;		/* earliest known future due time, or 0 */
	int			error_backoff_ms;
	MemoryContext requests_cxt; /* parent of every request's context */
	dlist_head	finished;		/* attempts waiting to be recorded */
	int			n_finished;
	HTAB	   *inflight;		/* webhook id -> requests in flight */
	SPIPlanPtr	claim_plan;
	SPIPlanPtr	next_due_plan;
	SPIPlanPtr	record_plan;
} WorkerState;

static WorkerState ws;

static HTAB *
make_inflight_hash(void)
{
	HASHCTL		ctl;

	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(InflightEntry);
	ctl.hcxt = TopMemoryContext;
	return hash_create("lark_webhooks requests in flight per webhook", 64,
					   &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/* Count a request in flight for its webhook (delta +1), or its end (-1). */
static void
count_inflight(const char *webhook_id, int delta)
{
	char		key[NAMEDATALEN];
	InflightEntry *entry;
	bool		found;

	/* Our ids have 27 characters; a longer one, made by hand, is cut. */
	strlcpy(key, webhook_id, sizeof(key));
	entry = hash_search(ws.inflight, key, delta > 0 ? HASH_ENTER : HASH_FIND,
						&found);
	if (entry == NULL)
		return;
	if (!found)
		entry->count = 0;
	entry->count += delta;
	if (entry->count <= 0)
		hash_search(ws.inflight, key, HASH_REMOVE, NULL);
}

/*
 * The in-flight counts as the claim's parameters: every webhook with
 * requests out and how many, and (for the next-due query) the ones with no
 * slot left.
 */
static void
inflight_arrays(Datum *ids, Datum *counts, Datum *saturated)
{
	long		n = hash_get_num_entries(ws.inflight);
	Datum	   *id_elems = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *count_elems = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *full_elems = palloc(sizeof(Datum) * Max(n, 1));
	int			i = 0;
	int			nfull = 0;
	HASH_SEQ_STATUS scan;
	InflightEntry *entry;

	hash_seq_init(&scan, ws.inflight);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		id_elems[i] = CStringGetTextDatum(entry->webhook_id);
		count_elems[i] = Int32GetDatum(entry->count);
		if (entry->count >= lark_max_concurrency_per_webhook)
			full_elems[nfull++] = id_elems[i];
		i++;
	}
	*ids = PointerGetDatum(construct_array(id_elems, i, TEXTOID, -1, false,
										   TYPALIGN_INT));
	*counts = PointerGetDatum(construct_array(count_elems, i, INT4OID, 4,
											  true, TYPALIGN_INT));
	*saturated = PointerGetDatum(construct_array(full_elems, nfull, TEXTOID,
												 -1, false, TYPALIGN_INT));
}

/* Advertise our latch so that committing transactions can wake us. */
static void
advertise_latch(bool on)
{
	SpinLockAcquire(&lark_shared->mutex);
	lark_shared->worker_pid = on ? MyProcPid : 0;
	lark_shared->worker_latch = on ? MyLatch : NULL;
	SpinLockRelease(&lark_shared->mutex);
}

static void
worker_on_exit(int code, Datum arg)
{
	advertise_latch(false);
}

/* Start a transaction with a snapshot and an SPI connection. */
static void
begin_work(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, "lark_webhooks: waiting for work");
}

static SPIPlanPtr
prepare_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s",
			 SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

static void
forget_plans(void)
{
	if (ws.claim_plan)
		SPI_freeplan(ws.claim_plan);
	if (ws.next_due_plan)
		SPI_freeplan(ws.next_due_plan);
	if (ws.record_plan)
		SPI_freeplan(ws.record_plan);
	ws.claim_plan = ws.next_due_plan = ws.record_plan = NULL;
}

/*
 * Try to start serving: succeed if the extension is installed, after
 * queueing again whatever a previous worker left in_flight.  Must be
 * called outside a transaction.
 */
static bool
start_serving(void)
{
	bool		present;

	begin_work("lark_webhooks: checking for the extension");
	present = OidIsValid(get_extension_oid("lark_webhooks", true));
	if (present)
	{
		Oid			claim_types[4] = {INT4OID, TEXTARRAYOID, INT4ARRAYOID,
		INT4OID};
		Oid			next_due_types[1] = {TEXTARRAYOID};
		Oid			record_types[9] = {TEXTARRAYOID, INT4ARRAYOID,
			TIMESTAMPTZARRAYOID, FLOAT8ARRAYOID, INT4ARRAYOID, TEXTARRAYOID,
		BYTEAARRAYOID, TEXTARRAYOID, TIMESTAMPTZARRAYOID};

		if (SPI_execute(requeue_sql, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not queue in-flight deliveries again");
		if (SPI_processed > 0)
			ereport(LOG,
					(errmsg("lark_webhooks queued %llu deliveries again that were in flight when the worker stopped",
							(unsigned long long) SPI_processed)));

		forget_plans();
		ws.claim_plan = prepare_plan(claim_sql, 4, claim_types);
		ws.next_due_plan = prepare_plan(next_due_sql, 1, next_due_types);
		ws.record_plan = prepare_plan(record_sql, 9, record_types);
	}
	end_work();

	if (present)
	{
		ereport(LOG,
				(errmsg("lark_webhooks worker is delivering for database \"%s\"",
						lark_database)));
		ws.logged_missing = false;
	}
	else if (!ws.logged_missing)
	{
		ereport(LOG,
				(errmsg("lark_webhooks worker is waiting for the extension in database \"%s\"",
						lark_database),
				 errhint("Run CREATE EXTENSION lark_webhooks in that database.")));
		ws.logged_missing = true;
	}
	return present;
}

/* Stop serving: drop every request and plan, and look for the extension. */
static void
stop_serving(void)
{
	lark_http_abort_all();
	while (!dlist_is_empty(&ws.finished))
		lark_http_free(dlist_container(LarkRequest, node,
									   dlist_pop_head_node(&ws.finished)));
	ws.n_finished = 0;
	forget_plans();
	hash_destroy(ws.inflight);
	ws.inflight = make_inflight_hash();
	ws.serving = false;
	ws.next_due = 0;
}

/* A one-dimensional array of n values of type elemtype. */
static Datum
make_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1];
	int			lbs[1];

	dims[0] = n;
	lbs[0] = 1;
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval,
											  typalign));
}

/*
 * A copy of an error text with every byte that is not printable ASCII
 * replaced, so that whatever a receiver made libcurl say can be stored in
 * any database encoding.
 */
static char *
printable_ascii(const char *s)
{
	char	   *copy = pstrdup(s);

	for (char *p = copy; *p; p++)
		if ((unsigned char) *p < 0x20 || (unsigned char) *p > 0x7E)
			*p = '?';
	return copy;
}

/*
 * Write the outcome of every finished attempt in one statement, decide
 * the retries, and log each delivery that has now failed for good.
 */
static void
record_finished(void)
{
	int			n = ws.n_finished;
	Datum	   *cols[9];
	bool	   *nulls[9];
	Datum		args[9];
	static const Oid elemtypes[9] = {TEXTOID, INT4OID, TIMESTAMPTZOID,
		FLOAT8OID, INT4OID, TEXTOID, BYTEAOID, TEXTOID, TIMESTAMPTZOID};
	LarkRequest **reqs = palloc(sizeof(LarkRequest *) * n);
	dlist_iter	iter;
	int			i = 0;

	for (int c = 0; c < 9; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		nulls[c] = palloc0(sizeof(bool) * n);
	}
	dlist_foreach(iter, &ws.finished)
	{
		LarkRequest *req = dlist_container(LarkRequest, node, iter.cur);
		const char *error = lark_http_error(req);
		bool		retry = error != NULL && req->attempt <= lark_retry_count;
		bytea	   *excerpt;

		reqs[i] = req;
		cols[0][i] = CStringGetTextDatum(req->delivery_id);
		cols[1][i] = Int32GetDatum(req->attempt);
		cols[2][i] = TimestampTzGetDatum(req->started_at);
		cols[3][i] = Float8GetDatum((req->finished_at - req->started_at) / 1000.0);
		cols[4][i] = Int32GetDatum((int32) req->http_status);
		nulls[4][i] = req->http_status == 0;
		if (error != NULL)
			cols[5][i] = CStringGetTextDatum(printable_ascii(error));
		nulls[5][i] = error == NULL;
		excerpt = (bytea *) palloc(VARHDRSZ + req->excerpt_len);
		SET_VARSIZE(excerpt, VARHDRSZ + req->excerpt_len);
		memcpy(VARDATA(excerpt), req->excerpt, req->excerpt_len);
		cols[6][i] = PointerGetDatum(excerpt);
		nulls[6][i] = req->excerpt_len == 0;
		cols[7][i] = CStringGetTextDatum(error == NULL ? "succeeded" :
										 retry ? "pending" : "failed");
		if (retry)
		{
			TimestampTz next;

			next = TimestampTzPlusMilliseconds(req->finished_at,
											   lark_retry_delays_ms[req->attempt - 1]);
			cols[8][i] = TimestampTzGetDatum(next);
			if (ws.next_due == 0 || next < ws.next_due)
				ws.next_due = next;
		}
		nulls[8][i] = !retry;
		i++;
	}

	for (int c = 0; c < 9; c++)
		args[c] = make_array(cols[c], nulls[c], n, elemtypes[c]);

	if (SPI_execute_plan(ws.record_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not record delivery attempts");

	/* One LOG line for each delivery dropped after its last attempt. */
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		char	   *id = SPI_getvalue(SPI_tuptable->vals[row],
									  SPI_tuptable->tupdesc, 1);

		for (int k = 0; k < n; k++)
		{
			if (strcmp(reqs[k]->delivery_id, id) != 0)
				continue;
			ereport(LOG,
					(errmsg("lark_webhooks dropped delivery \"%s\" of event \"%s\" to webhook \"%s\" after %d attempts",
							reqs[k]->delivery_id, reqs[k]->event,
							reqs[k]->webhook_id, reqs[k]->attempt),
					 errdetail("Last error: %s", lark_http_error(reqs[k])),
					 errhint("The webhook stays active; the attempts are in lark.delivery_attempts.")));
			break;
		}
	}
}

/* Copy a text column of the current SPI row into the request's context. */
static char *
column_text(HeapTuple tuple, int col, MemoryContext cxt, size_t *len)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, SPI_tuptable->tupdesc, col, &isnull);
	text	   *t;
	char	   *result;
	size_t		n;

	if (isnull)
		elog(ERROR, "unexpected NULL in column %d of a claimed delivery", col);
	t = DatumGetTextPP(d);
	n = VARSIZE_ANY_EXHDR(t);
	result = MemoryContextAlloc(cxt, n + 1);
	memcpy(result, VARDATA_ANY(t), n);
	result[n] = '\0';
	if (len)
		*len = n;
	return result;
}

/*
 * A request for one claimed row: the body in UTF-8, signed with the
 * webhook's current secret, which is wiped as soon as it has served.
 */
static LarkRequest *
prepare_request(HeapTuple tuple)
{
	LarkRequest *req = lark_http_new_request(ws.requests_cxt);
	char	   *secret;
	size_t		secret_len;
	char	   *body;
	bool		isnull;

	req->delivery_id = column_text(tuple, 1, req->cxt, NULL);
	req->webhook_id = column_text(tuple, 2, req->cxt, NULL);
	req->attempt = DatumGetInt32(SPI_getbinval(tuple, SPI_tuptable->tupdesc,
											   3, &isnull)) + 1;
	req->url = column_text(tuple, 4, req->cxt, NULL);
	req->event = column_text(tuple, 6, req->cxt, NULL);
	req->body = column_text(tuple, 7, req->cxt, &req->body_len);

	/* Receivers get UTF-8, whatever the database encoding. */
	body = pg_server_to_any(req->body, req->body_len, PG_UTF8);
	if (body != req->body)
	{
		req->body = MemoryContextStrdup(req->cxt, body);
		req->body_len = strlen(body);
	}

	secret = column_text(tuple, 5, CurrentMemoryContext, &secret_len);
	lark_hmac_sha256_hex(secret, secret_len, req->body, req->body_len,
						 req->signature);
	explicit_bzero(secret, secret_len);
	pfree(secret);

	count_inflight(req->webhook_id, 1);
	return req;
}

/*
 * Claim up to limit due deliveries and prepare a request for each: the
 * body in UTF-8 and its signature with the webhook's current secret.  The
 * requests are returned in *claimed and sent after the commit.
 *
 * A claim that comes back short may have met its per-webhook caps before
 * it looked far enough down the queue, so claim again, with the new
 * counts, until the slots are filled or a claim finds nothing.
 */
static void
claim_due(int limit, dlist_head *claimed)
{
	int			room = limit;

	while (room > 0)
	{
		Datum		args[4];
		Datum		saturated;
		uint64		nclaimed;

		inflight_arrays(&args[1], &args[2], &saturated);
		args[0] = Int32GetDatum(room);
		args[3] = Int32GetDatum(lark_max_concurrency_per_webhook);
		if (SPI_execute_plan(ws.claim_plan, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "could not claim due deliveries");
		nclaimed = SPI_processed;

		for (uint64 row = 0; row < nclaimed; row++)
			dlist_push_tail(claimed,
							&prepare_request(SPI_tuptable->vals[row])->node);
		room -= (int) nclaimed;
		if (nclaimed == 0)
			break;
	}

	/* Full: more may be due.  Otherwise learn when the next one falls due. */
	ws.claim_wanted = room == 0;
	if (!ws.claim_wanted)
	{
		Datum		ids;
		Datum		counts;
		Datum		args[1];

		inflight_arrays(&ids, &counts, &args[0]);

		/* Not read-only: it must see the retries recorded just before. */
		ws.next_due = 0;
		if (SPI_execute_plan(ws.next_due_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not find the next due delivery");
		if (SPI_processed > 0)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				ws.next_due = DatumGetTimestampTz(d);
		}

		/*
		 * Due yet not claimed: another transaction holds its row lock.  Look
		 * again in a while rather than spin; its commit may not wake us.
		 */
		if (ws.next_due != 0 && ws.next_due <= GetCurrentTimestamp())
			ws.next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													  LOCKED_RETRY_MS);
	}
}

/*
 * One short transaction: record what finished, then claim what is due and
 * there is room for.  The new requests go out only after the commit, so a
 * request is never in flight for a row that is not in_flight.
 */
static void
sync_with_table(void)
{
	dlist_head	claimed;
	int			room = lark_max_concurrency - lark_http_running();
	bool		claim;

	claim = room > 0 &&
		(ws.claim_wanted ||
		 (ws.next_due != 0 && GetCurrentTimestamp() >= ws.next_due));
	if (ws.n_finished == 0 && !claim)
		return;

	dlist_init(&claimed);
	begin_work("lark_webhooks: recording attempts and claiming deliveries");

	/* The extension may have been dropped while requests were in flight. */
	if (!OidIsValid(get_extension_oid("lark_webhooks", true)))
	{
		end_work();
		ereport(LOG,
				(errmsg("lark_webhooks extension was dropped from database \"%s\"; the worker forgets the requests it had out",
						lark_database)));
		stop_serving();
		return;
	}

	if (ws.n_finished > 0)
		record_finished();
	if (claim)
		claim_due(room, &claimed);
	end_work();

	/* Recorded and committed: the finished requests can go. */
	while (!dlist_is_empty(&ws.finished))
		lark_http_free(dlist_container(LarkRequest, node,
									   dlist_pop_head_node(&ws.finished)));
	ws.n_finished = 0;

	while (!dlist_is_empty(&claimed))
		lark_http_start(dlist_container(LarkRequest, node,
										dlist_pop_head_node(&claimed)));
	ws.error_backoff_ms = 0;
}

/* How long the loop may sleep before it has something to do. */
static long
compute_timeout(void)
{
	long		timeout;
	long		http_timeout = lark_http_timeout();

	if (!ws.serving)
		return MISSING_POLL_MS;
	if (ws.n_finished > 0)
		return 0;

	timeout = IDLE_POLL_MS;
	if (http_timeout >= 0)
		timeout = Min(timeout, http_timeout);

	/* Due work only matters while there is room to start it. */
	if (lark_http_running() < lark_max_concurrency)
	{
		if (ws.claim_wanted)
			return 0;
		if (ws.next_due != 0)
		{
			TimestampTz now = GetCurrentTimestamp();

			if (now >= ws.next_due)
				return 0;
			timeout = Min(timeout, (long) ((ws.next_due - now + 999) / 1000));
		}
	}
	return timeout;
}

/*
 * Entry point of the delivery worker.
 */
void
lark_worker_main(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;
	WaitEventSet *wait_set;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(lark_database, NULL, 0);

	/*
	 * Our own commits need not wait for the WAL flush: a result lost in a
	 * crash leaves its delivery in_flight, and it is simply sent again.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	memset(&ws, 0, sizeof(ws));
	dlist_init(&ws.finished);
	ws.requests_cxt = AllocSetContextCreate(TopMemoryContext,
											"lark_webhooks requests",
											ALLOCSET_DEFAULT_SIZES);
	ws.inflight = make_inflight_hash();
	lark_http_init();

	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL,
					  NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, lark_http_socket(), NULL,
					  NULL);

	on_shmem_exit(worker_on_exit, (Datum) 0);
	advertise_latch(true);
	ereport(LOG,
			(errmsg("lark_webhooks worker started (pid %d)", MyProcPid)));

	/*
	 * An ERROR that escapes a transaction lands here.  Report it, roll back,
	 * drop whatever was in flight (those deliveries are queued again when we
	 * serve again) and pause before starting over, longer each time in a row,
	 * so that a broken schema cannot make the worker spin.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		EmitErrorReport();
		AbortOutOfAnyTransaction();
		FlushErrorState();
		MemoryContextSwitchTo(TopMemoryContext);
		pgstat_report_activity(STATE_IDLE, NULL);
		stop_serving();
		RESUME_INTERRUPTS();

		ws.error_backoff_ms = Min(Max(ws.error_backoff_ms * 2, 1000),
								  MAX_ERROR_BACKOFF_MS);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 ws.error_backoff_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		WaitEvent	events[3];
		int			nevents;

		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			ws.claim_wanted = true;
		}

		if (!ws.serving)
		{
			ws.serving = start_serving();
			ws.claim_wanted = ws.serving;
		}

		if (ws.serving)
		{
			LarkRequest *req;

			lark_http_progress();
			while ((req = lark_http_next_done()) != NULL)
			{
				/* Its slot is free again: look for work at the next sync. */
				count_inflight(req->webhook_id, -1);
				ws.claim_wanted = true;
				dlist_push_tail(&ws.finished, &req->node);
				ws.n_finished++;
			}
			sync_with_table();
		}

		nevents = WaitEventSetWait(wait_set, compute_timeout(), events,
								   lengthof(events), PG_WAIT_EXTENSION);
		for (int i = 0; i < nevents; i++)
		{
			if (events[i].events & WL_LATCH_SET)
			{
				/* New deliveries were committed, or we are asked to stop. */
				ResetLatch(MyLatch);
				ws.claim_wanted = true;
			}
		}
	}
}
