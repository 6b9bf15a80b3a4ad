"""One cell of Keyline's client matrix with Python's confluent-kafka (on
librdkafka), as Debian packages it (python3-confluent-kafka).

internal/e2e/clients_test.go runs it with the cell's name as the argument
and the deployment in the environment: KEYLINE_BOOTSTRAP (brokers),
KEYLINE_APIKEY (an API key, SASL PLAIN user "token"), KEYLINE_URL (where
POST /identity/token exchanges the API key for an IAM access token),
KEYLINE_TOPIC, and the cell's data as JSON in KEYLINE_CELL_DATA. It prints
one JSON object, what the test checks; a failure raises (exit 1).
"""

import json
import os
import sys
import time
import urllib.parse
import urllib.request

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

TIMEOUT = 60.0
BOOTSTRAP = os.environ["KEYLINE_BOOTSTRAP"]
APIKEY = os.environ["KEYLINE_APIKEY"]
TOPIC = os.environ["KEYLINE_TOPIC"]
DATA = json.loads(os.environ.get("KEYLINE_CELL_DATA") or "{}")


def plain(**more):
    conf = {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "token",
        "sasl.password": APIKEY,
    }
    conf.update(more)
    return conf


def iam_token(_config):
    """oauth_cb: an IAM access token for the API key, and when it expires."""
    body = urllib.parse.urlencode({"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": APIKEY}).encode()
    with urllib.request.urlopen(os.environ["KEYLINE_URL"] + "/identity/token", body, timeout=30) as resp:
        tok = json.load(resp)
    return tok["access_token"], time.time() + float(tok.get("expires_in", 3600))


def wait(futures):
    for f in futures.values():
        f.result(timeout=TIMEOUT)


def describe(admin):
    res = ConfigResource("topic", TOPIC)
    configs = admin.describe_configs([res])[res].result(timeout=TIMEOUT)
    return {name: entry.value for name, entry in configs.items()}


def create_compacted(admin):
    wait(admin.create_topics([NewTopic(TOPIC, 1, 1, config=DATA["configs"])], request_timeout=TIMEOUT))


def read(conf, n):
    """The first n values of TOPIC's partition 0."""
    c = Consumer(dict(conf, **{"group.id": TOPIC + "-reader", "enable.auto.commit": False}))
    c.assign([TopicPartition(TOPIC, 0, 0)])
    got, deadline = [], time.time() + TIMEOUT
    while len(got) < n and time.time() < deadline:
        msg = c.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        got.append(msg.value().decode())
    c.close()
    return got


def cell_create():
    admin = AdminClient(plain())
    create_compacted(admin)
    return {"configs": describe(admin)}


def cell_configs():
    admin = AdminClient(plain())
    create_compacted(admin)
    # AlterConfigs replaces the topic's whole set: name every config to keep.
    res = ConfigResource("topic", TOPIC, set_config=dict(DATA["configs"], **{"retention.ms": DATA["retention"]}))
    wait(admin.alter_configs([res], request_timeout=TIMEOUT))
    return {"configs": describe(admin)}


def cell_transactions():
    p = Producer(plain(**{"transactional.id": TOPIC}))
    p.init_transactions(TIMEOUT)
    for value in ["committed-1", "committed-2", "aborted-1", "committed-3"]:
        p.begin_transaction()
        p.produce(TOPIC, value.encode(), partition=0)
        if value.startswith("aborted"):
            p.flush(TIMEOUT)  # the record is in the log, then aborted
            p.abort_transaction(TIMEOUT)
        else:
            p.commit_transaction(TIMEOUT)
    return {"read_committed": read(plain(**{"isolation.level": "read_committed"}), 3),
            "read_uncommitted": read(plain(**{"isolation.level": "read_uncommitted"}), 4)}


def cell_offsets_for_times():
    # linger.ms gathers the three records into one batch.
    p = Producer(plain(**{"linger.ms": 2000}))
    for i, ts in enumerate(DATA["timestamps"]):
        p.produce(TOPIC, ("at-%d" % i).encode(), partition=0, timestamp=ts)
    if p.flush(TIMEOUT) != 0:
        raise RuntimeError("records left unsent")
    c = Consumer(plain(**{"group.id": TOPIC}))
    offsets = []
    for ts in DATA["queries"]:
        [tp] = c.offsets_for_times([TopicPartition(TOPIC, 0, ts)], timeout=TIMEOUT)
        if tp.error:
            raise KafkaException(tp.error)
        offsets.append(tp.offset)
    c.close()
    return {"offsets": offsets}


def cell_oauthbearer():
    conf = {"bootstrap.servers": BOOTSTRAP, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "OAUTHBEARER", "oauth_cb": iam_token}
    p = Producer(conf)
    p.produce(TOPIC, b"over-oauthbearer", partition=0)
    if p.flush(TIMEOUT) != 0:
        raise RuntimeError("record left unsent")
    return {"read": read(conf, 1)}


CELLS = {
    "create": cell_create,
    "configs": cell_configs,
    "transactions": cell_transactions,
    "offsets-for-times": cell_offsets_for_times,
    "oauthbearer": cell_oauthbearer,
}

if __name__ == "__main__":
    print(json.dumps(CELLS[sys.argv[1]]()))
