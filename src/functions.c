/*-------------------------------------------------------------------------
 *
 * functions.c
 *		SQL-callable helpers: signing and verifying payloads, random ids,
 *		URL checks and the serialization of an event's JSON body.
 *
 * Nothing here writes a secret or a signature into an error message.
 *
 *-------------------------------------------------------------------------
 */
#include "lark_webhooks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#define LARK_URL_MAX_LEN 2048

PG_FUNCTION_INFO_V1(lark_random_hex);
PG_FUNCTION_INFO_V1(lark_ordered_id);
PG_FUNCTION_INFO_V1(lark_sign_bytea);
PG_FUNCTION_INFO_V1(lark_sign_text);
PG_FUNCTION_INFO_V1(lark_sign_raw_key);
PG_FUNCTION_INFO_V1(lark_verify_bytea);
PG_FUNCTION_INFO_V1(lark_verify_text);
PG_FUNCTION_INFO_V1(lark_check_url);
PG_FUNCTION_INFO_V1(lark_event_body);


/*
 * Compute the lowercase hex HMAC-SHA256 of data under key into hex, which
 * must have room for LARK_SIGNATURE_HEX_LEN + 1 bytes.
 */
void
lark_hmac_sha256_hex(const char *key, size_t keylen,
					 const char *data, size_t datalen, char *hex)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	if (keylen > INT_MAX ||
		HMAC(EVP_sha256(), key, (int) keylen,
			 (const unsigned char *) data, datalen, mac, &maclen) == NULL ||
		maclen * 2 != LARK_SIGNATURE_HEX_LEN)
		elog(ERROR, "could not compute HMAC-SHA256");

	hex_encode((const char *) mac, maclen, hex);
	hex[LARK_SIGNATURE_HEX_LEN] = '\0';
	explicit_bzero(mac, sizeof(mac));
}

/*
 * Return the UTF-8 bytes of a text value.  The result may point into the
 * value itself when the database encoding is already UTF-8.
 */
static const char *
text_to_utf8(text *t, size_t *len)
{
	const char *data = VARDATA_ANY(t);
	int			datalen = VARSIZE_ANY_EXHDR(t);
	char	   *converted;

	converted = pg_server_to_any(data, datalen, PG_UTF8);
	if (converted != data)
		datalen = strlen(converted);
	*len = datalen;
	return converted;
}

/* The hex signature of body under a text secret, as a palloc'd string. */
static char *
sign_bytes(const char *body, size_t bodylen, text *secret)
{
	size_t		keylen;
	const char *key = text_to_utf8(secret, &keylen);
	char	   *hex = palloc(LARK_SIGNATURE_HEX_LEN + 1);

	lark_hmac_sha256_hex(key, keylen, body, bodylen, hex);
	return hex;
}

/*
 * True when signature is exactly the expected lowercase hex digest, as
 * Python's hmac.compare_digest would judge it.  Lengths are public; the
 * digits are compared in constant time.
 */
static bool
signature_matches(const char *body, size_t bodylen, text *signature,
				  text *secret)
{
	char	   *expected = sign_bytes(body, bodylen, secret);
	bool		match;

	match = VARSIZE_ANY_EXHDR(signature) == LARK_SIGNATURE_HEX_LEN &&
		timingsafe_bcmp(expected, VARDATA_ANY(signature),
						LARK_SIGNATURE_HEX_LEN) == 0;
	explicit_bzero(expected, LARK_SIGNATURE_HEX_LEN);
	pfree(expected);
	return match;
}

/* lark._random_hex(nbytes): hex digits from the strong random source. */
Datum
lark_random_hex(PG_FUNCTION_ARGS)
{
	int32		nbytes = PG_GETARG_INT32(0);
	char	   *raw;
	text	   *result;

	if (nbytes < 1 || nbytes > 1024)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("number of random bytes must be between 1 and 1024")));

	raw = palloc(nbytes);
	if (!pg_strong_random(raw, nbytes))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));

	result = (text *) palloc(VARHDRSZ + nbytes * 2);
	SET_VARSIZE(result, VARHDRSZ + nbytes * 2);
	hex_encode(raw, nbytes, VARDATA(result));
	PG_RETURN_TEXT_P(result);
}

/*
 * lark._ordered_id(prefix): prefix, 12 hex digits of the Unix time in
 * milliseconds (48 bits: enough until the year 10889), 12 random hex
 * digits.  Ids made later sort later, so a busy table's primary key grows
 * at its right edge: a random key would touch a different index page with
 * every row, and after each checkpoint write a full image of every page it
 * touches to the WAL.
 */
Datum
lark_ordered_id(PG_FUNCTION_ARGS)
{
	text	   *prefix = PG_GETARG_TEXT_PP(0);
	int			plen = VARSIZE_ANY_EXHDR(prefix);
	uint64		now = (uint64) (GetCurrentTimestamp() / 1000 +
								(int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) *
								SECS_PER_DAY * 1000);
	unsigned char stamp[6];
	char		rnd[6];
	text	   *result;
	char	   *p;

	for (int i = 5; i >= 0; i--, now >>= 8)
		stamp[i] = (unsigned char) (now & 0xFF);
	if (!pg_strong_random(rnd, sizeof(rnd)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate random bytes")));

	result = (text *) palloc(VARHDRSZ + plen + 24);
	SET_VARSIZE(result, VARHDRSZ + plen + 24);
	p = VARDATA(result);
	memcpy(p, VARDATA_ANY(prefix), plen);
	hex_encode((const char *) stamp, sizeof(stamp), p + plen);
	hex_encode(rnd, sizeof(rnd), p + plen + 12);
	PG_RETURN_TEXT_P(result);
}

/* lark.sign(body bytea, secret text) */
Datum
lark_sign_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *body = PG_GETARG_BYTEA_PP(0);
	text	   *secret = PG_GETARG_TEXT_PP(1);

	PG_RETURN_TEXT_P(cstring_to_text(sign_bytes(VARDATA_ANY(body),
												VARSIZE_ANY_EXHDR(body),
												secret)));
}

/* lark.sign(body bytea, key bytea): for keys that are not text */
Datum
lark_sign_raw_key(PG_FUNCTION_ARGS)
{
	bytea	   *body = PG_GETARG_BYTEA_PP(0);
	bytea	   *key = PG_GETARG_BYTEA_PP(1);
	char	   *hex = palloc(LARK_SIGNATURE_HEX_LEN + 1);

	lark_hmac_sha256_hex(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key),
						 VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body), hex);
	PG_RETURN_TEXT_P(cstring_to_text(hex));
}

/* lark.sign(body text, secret text): signs the UTF-8 bytes of body */
Datum
lark_sign_text(PG_FUNCTION_ARGS)
{
	size_t		bodylen;
	const char *body = text_to_utf8(PG_GETARG_TEXT_PP(0), &bodylen);
	text	   *secret = PG_GETARG_TEXT_PP(1);

	PG_RETURN_TEXT_P(cstring_to_text(sign_bytes(body, bodylen, secret)));
}

/*
 * lark.verify(body bytea, signature text, secret text).  Not strict: any
 * NULL argument, like an empty or malformed signature, gives false.
 */
Datum
lark_verify_bytea(PG_FUNCTION_ARGS)
{
	bytea	   *body;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_BOOL(false);

	body = PG_GETARG_BYTEA_PP(0);
	PG_RETURN_BOOL(signature_matches(VARDATA_ANY(body),
									 VARSIZE_ANY_EXHDR(body),
									 PG_GETARG_TEXT_PP(1),
									 PG_GETARG_TEXT_PP(2)));
}

/* lark.verify(body text, signature text, secret text) */
Datum
lark_verify_text(PG_FUNCTION_ARGS)
{
	const char *body;
	size_t		bodylen;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_BOOL(false);

	body = text_to_utf8(PG_GETARG_TEXT_PP(0), &bodylen);
	PG_RETURN_BOOL(signature_matches(body, bodylen,
									 PG_GETARG_TEXT_PP(1),
									 PG_GETARG_TEXT_PP(2)));
}

/*
 * Refuse a host that is a literal address in a range the worker would not
 * connect to.  Host names are checked by the worker when they resolve.
 */
static void
check_literal_host(const char *host)
{
	char		bare[INET6_ADDRSTRLEN + 2];
	struct sockaddr_storage ss;
	char		why[256];
	size_t		len = strlen(host);

	/* An IPv6 literal comes in brackets. */
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']' &&
		len - 2 < sizeof(bare))
	{
		memcpy(bare, host + 1, len - 2);
		bare[len - 2] = '\0';
		host = bare;
	}
	if (!lark_address_from_text(host, &ss))
		return;

	if (!lark_address_allowed((struct sockaddr *) &ss, why, sizeof(why)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook url points at a refused address"),
				 errdetail("%s", why),
				 errhint("Use a public address, or list the range in lark_webhooks.allowed_networks.")));
}

/*
 * lark._check_url(url): raise an error unless url is an absolute http or
 * https URL with a host and no user name or password, at most 2048
 * characters long.  The URL itself is not echoed: it may hold credentials.
 */
Datum
lark_check_url(PG_FUNCTION_ARGS)
{
	char	   *url;
	const char *sep;
	CURLU	   *handle;
	CURLUcode	rc;
	char	   *part = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("webhook url must not be NULL"),
				 errhint("Pass an http or https URL, such as 'https://example.com/hooks/lark'.")));

	url = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strlen(url) > LARK_URL_MAX_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook url is longer than %d characters",
						LARK_URL_MAX_LEN),
				 errhint("Use a shorter URL.")));

	handle = curl_url();
	if (handle == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));

	rc = curl_url_set(handle, CURLUPART_URL, url, 0);
	if (rc != CURLUE_OK)
	{
		curl_url_cleanup(handle);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook url is not a valid absolute URL"),
				 errdetail("%s", curl_url_strerror(rc)),
				 errhint("Pass an http or https URL, such as 'https://example.com/hooks/lark'.")));
	}

	if (curl_url_get(handle, CURLUPART_SCHEME, &part, 0) != CURLUE_OK ||
		(strcmp(part, "http") != 0 && strcmp(part, "https") != 0))
	{
		curl_free(part);
		curl_url_cleanup(handle);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook url must use http or https"),
				 errhint("Pass an http or https URL, such as 'https://example.com/hooks/lark'.")));
	}
	curl_free(part);
	part = NULL;

	/*
	 * libcurl reads "https:///host" and "https:/host" as if the slashes were
	 * right; we want the authority to follow "://" as written.
	 */
	sep = strstr(url, "://");
	if (sep == NULL || sep[3] == '/' || sep[3] == '\0')
	{
		curl_url_cleanup(handle);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook url must be absolute, with a host after \"://\""),
				 errhint("Pass an http or https URL, such as 'https://example.com/hooks/lark'.")));
	}

	if (curl_url_get(handle, CURLUPART_USER, &part, 0) != CURLUE_NO_USER ||
		curl_url_get(handle, CURLUPART_PASSWORD, &part, 0) != CURLUE_NO_PASSWORD)
	{
		curl_free(part);
		curl_url_cleanup(handle);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook url must not contain a user name or password"),
				 errhint("Authenticate the request by its X-Lark-Signature header instead.")));
	}

	rc = curl_url_get(handle, CURLUPART_HOST, &part, 0);
	if (rc != CURLUE_OK || part[0] == '\0')
	{
		curl_free(part);
		curl_url_cleanup(handle);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("webhook url has no host"),
				 errhint("Pass an http or https URL, such as 'https://example.com/hooks/lark'.")));
	}

	PG_TRY();
	{
		check_literal_host(part);
	}
	PG_FINALLY();
	{
		curl_free(part);
		curl_url_cleanup(handle);
	}
	PG_END_TRY();

	PG_RETURN_VOID();
}

/* Append a text argument as a JSON string, or null. */
static void
append_json_text(StringInfo buf, FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		appendStringInfoString(buf, "null");
	else
		escape_json(buf, text_to_cstring(PG_GETARG_TEXT_PP(argno)));
}

/* Append a timestamptz argument as "YYYY-MM-DDTHH:MI:SSZ" in UTC, or null. */
static void
append_json_timestamp(StringInfo buf, FunctionCallInfo fcinfo, int argno)
{
	TimestampTz ts;
	struct pg_tm tm;
	fsec_t		fsec;

	if (PG_ARGISNULL(argno))
	{
		appendStringInfoString(buf, "null");
		return;
	}

	ts = PG_GETARG_TIMESTAMPTZ(argno);
	if (TIMESTAMP_NOT_FINITE(ts) ||
		timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0 ||
		tm.tm_year < 1 || tm.tm_year > 9999)
	{
		appendStringInfoString(buf, "null");
		return;
	}

	appendStringInfo(buf, "\"%04d-%02d-%02dT%02d:%02d:%02dZ\"",
					 tm.tm_year, tm.tm_mon, tm.tm_mday,
					 tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Append a text[] argument as a JSON array of strings, or null. */
static void
append_json_text_array(StringInfo buf, FunctionCallInfo fcinfo, int argno)
{
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;

	if (PG_ARGISNULL(argno))
	{
		appendStringInfoString(buf, "null");
		return;
	}

	deconstruct_array(PG_GETARG_ARRAYTYPE_P(argno), TEXTOID, -1, false,
					  TYPALIGN_INT, &elems, &nulls, &nelems);
	appendStringInfoChar(buf, '[');
	for (int i = 0; i < nelems; i++)
	{
		if (i > 0)
			appendStringInfoChar(buf, ',');
		if (nulls[i])
			appendStringInfoString(buf, "null");
		else
			escape_json(buf, TextDatumGetCString(elems[i]));
	}
	appendStringInfoChar(buf, ']');
}

/*
 * lark._event_body(event, fired_at, workflow_id, workflow_name,
 *					workflow_description, secret_context_names, id_key,
 *					runnable_id, status, started_at, finished_at, summary)
 *
 * The compact JSON envelope of one event, keys in the documented order.
 * It is computed once when the event fires; every attempt sends and signs
 * these exact bytes.
 */
Datum
lark_event_body(PG_FUNCTION_ARGS)
{
	StringInfoData buf;

	if (PG_ARGISNULL(6))
		elog(ERROR, "event body needs the name of the run's id");

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"event\":");
	append_json_text(&buf, fcinfo, 0);
	appendStringInfoString(&buf, ",\"timestamp\":");
	append_json_timestamp(&buf, fcinfo, 1);

	appendStringInfoString(&buf, ",\"workflow\":{\"id\":");
	append_json_text(&buf, fcinfo, 2);
	appendStringInfoString(&buf, ",\"name\":");
	append_json_text(&buf, fcinfo, 3);
	appendStringInfoString(&buf, ",\"description\":");
	append_json_text(&buf, fcinfo, 4);
	appendStringInfoString(&buf, ",\"secret_context_names\":");
	append_json_text_array(&buf, fcinfo, 5);

	appendStringInfoString(&buf, "},\"data\":{");
	append_json_text(&buf, fcinfo, 6);
	appendStringInfoChar(&buf, ':');
	append_json_text(&buf, fcinfo, 7);
	appendStringInfoString(&buf, ",\"status\":");
	append_json_text(&buf, fcinfo, 8);
	appendStringInfoString(&buf, ",\"started_at\":");
	append_json_timestamp(&buf, fcinfo, 9);
	appendStringInfoString(&buf, ",\"finished_at\":");
	append_json_timestamp(&buf, fcinfo, 10);
	appendStringInfoString(&buf, ",\"duration_ms\":");
	if (PG_ARGISNULL(9) || PG_ARGISNULL(10) ||
		TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(9)) ||
		TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(10)))
		appendStringInfoString(&buf, "null");
	else
		appendStringInfo(&buf, INT64_FORMAT,
						 (PG_GETARG_TIMESTAMPTZ(10) -
						  PG_GETARG_TIMESTAMPTZ(9)) / 1000);
	appendStringInfoString(&buf, ",\"summary\":");
	append_json_text(&buf, fcinfo, 11);
	appendStringInfoString(&buf, "}}");

	PG_RETURN_TEXT_P(cstring_to_text_with_len(buf.data, buf.len));
}
