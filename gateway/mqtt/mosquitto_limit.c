/*
 * carbonx: a per-account publishing limit for mosquitto 2.0 (plugin interface 5).
 *
 * Every account's orders reach the gateway in one stream from the broker, so an
 * account that floods puts its messages in front of everyone else's. Mosquitto 2.0 has
 * no per-client rate limit; this plugin is one. Each user (but the exempt one, the
 * gateway) has two token buckets, messages and bytes; a publish that finds either
 * empty is dropped (MQTT 3.1.1 has no way to refuse a publish: the sender still gets
 * its PUBACK) and, at most once a second, the account is told so on its reports topic
 * and the broker's log says so. Bots resend what stays unanswered.
 *
 * Options (plugin_opt_NAME in mosquitto.conf; `carbonx broker-config` writes them):
 *   message_rate, message_burst   messages a second, and the bucket's size
 *   byte_rate, byte_burst         bytes a second (payloads), and the bucket's size
 *   exempt                        a user name never limited (the gateway)
 *   notice_prefix                 topic prefix for the notice, + user name
 *
 * Build: cc -O2 -shared -fPIC -o carbonx_limit.so mosquitto_limit.c
 * (headers from Debian's mosquitto-dev and libmosquitto-dev).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define TABLE_SIZE 4096           /* buckets of the account table (chained) */
#define MAX_NAME 256

struct account {
	struct account *next;
	char *name;
	double messages;              /* tokens left */
	double bytes;
	double stamp;                 /* seconds, monotonic: last refill */
	double told;                  /* when the account was last told it is held */
	uint64_t dropped;             /* since it was last told */
};

static mosquitto_plugin_id_t *plugin_id = NULL;
static struct account *table[TABLE_SIZE];
static double message_rate = 1000.0, message_burst = 2000.0;
static double byte_rate = 4194304.0, byte_burst = 2097152.0;
static char exempt[MAX_NAME] = "gateway";
static char notice_prefix[MAX_NAME] = "cx/v1/exec/";

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long hash_name(const char *name)
{
	unsigned long h = 5381;
	for(; *name; name++){
		h = h * 33 + (unsigned char)*name;
	}
	return h % TABLE_SIZE;
}

static struct account *account_of(const char *name, double now)
{
	unsigned long slot = hash_name(name);
	struct account *a;
	for(a = table[slot]; a; a = a->next){
		if(!strcmp(a->name, name)){
			return a;
		}
	}
	a = calloc(1, sizeof(*a));
	if(!a){
		return NULL;
	}
	a->name = strdup(name);
	if(!a->name){
		free(a);
		return NULL;
	}
	a->messages = message_burst;
	a->bytes = byte_burst;
	a->stamp = now;
	a->told = now - 2.0;
	a->next = table[slot];
	table[slot] = a;
	return a;
}

static void tell(struct account *a, double now)
{
	char topic[2 * MAX_NAME];
	char body[512];
	int n;
	snprintf(topic, sizeof(topic), "%s%s", notice_prefix, a->name);
	n = snprintf(body, sizeof(body),
			"{\"report\":\"notice\",\"reason\":\"rate_limited\",\"dropped\":%llu,"
			"\"message\":\"over the account's publishing limit of %.0f messages or %.0f bytes"
			" a second: the broker dropped %llu message(s); resend what is unanswered\"}",
			(unsigned long long)a->dropped, message_rate, byte_rate,
			(unsigned long long)a->dropped);
	mosquitto_broker_publish_copy(NULL, topic, n, body, 1, false, NULL);
	mosquitto_log_printf(MOSQ_LOG_WARNING,
			"carbonx limit: dropped %llu message(s) of %s over %.0f messages or %.0f bytes a second",
			(unsigned long long)a->dropped, a->name, message_rate, byte_rate);
	a->told = now;
	a->dropped = 0;
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *user;
	struct account *a;
	double now, elapsed;
	(void)event;
	(void)userdata;

	if(!ed->client){
		return MOSQ_ERR_SUCCESS;  /* published by the broker or a plugin */
	}
	user = mosquitto_client_username(ed->client);
	if(!user || !strcmp(user, exempt)){
		return MOSQ_ERR_SUCCESS;
	}
	now = now_seconds();
	a = account_of(user, now);
	if(!a){
		return MOSQ_ERR_SUCCESS;  /* out of memory: let it through rather than fail */
	}
	elapsed = now - a->stamp;
	if(elapsed > 0){
		a->messages += elapsed * message_rate;
		if(a->messages > message_burst) a->messages = message_burst;
		a->bytes += elapsed * byte_rate;
		if(a->bytes > byte_burst) a->bytes = byte_burst;
		a->stamp = now;
	}
	if(a->messages >= 1.0 && a->bytes >= (double)ed->payloadlen){
		a->messages -= 1.0;
		a->bytes -= (double)ed->payloadlen;
		return MOSQ_ERR_SUCCESS;
	}
	a->dropped++;
	if(now - a->told >= 1.0){
		tell(a, now);
	}
	return MOSQ_ERR_ACL_DENIED;
}

static int positive_option(const char *key, const char *value, double *out)
{
	char *end = NULL;
	double v = strtod(value, &end);
	if(!end || *end || !(v > 0)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "carbonx limit: plugin_opt_%s must be a positive number, not '%s'", key, value);
		return MOSQ_ERR_INVAL;
	}
	*out = v;
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *opts, int opt_count)
{
	int i, rc;
	(void)userdata;

	for(i = 0; i < opt_count; i++){
		const char *key = opts[i].key, *value = opts[i].value;
		rc = MOSQ_ERR_SUCCESS;
		if(!strcmp(key, "message_rate")) rc = positive_option(key, value, &message_rate);
		else if(!strcmp(key, "message_burst")) rc = positive_option(key, value, &message_burst);
		else if(!strcmp(key, "byte_rate")) rc = positive_option(key, value, &byte_rate);
		else if(!strcmp(key, "byte_burst")) rc = positive_option(key, value, &byte_burst);
		else if(!strcmp(key, "exempt")) snprintf(exempt, sizeof(exempt), "%s", value);
		else if(!strcmp(key, "notice_prefix")) snprintf(notice_prefix, sizeof(notice_prefix), "%s", value);
		else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "carbonx limit: unknown option plugin_opt_%s", key);
			rc = MOSQ_ERR_INVAL;
		}
		if(rc != MOSQ_ERR_SUCCESS){
			return rc;
		}
	}
	plugin_id = identifier;
	mosquitto_log_printf(MOSQ_LOG_INFO,
			"carbonx limit: %.0f messages (burst %.0f) and %.0f bytes (burst %.0f) a second an account; %s exempt",
			message_rate, message_burst, byte_rate, byte_burst, exempt);
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	int i;
	(void)userdata;
	(void)opts;
	(void)opt_count;
	for(i = 0; i < TABLE_SIZE; i++){
		struct account *a = table[i], *next;
		for(; a; a = next){
			next = a->next;
			free(a->name);
			free(a);
		}
		table[i] = NULL;
	}
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_MESSAGE, on_message, NULL);
}
