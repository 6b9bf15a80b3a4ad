// One cell of Keyline's client matrix with KafkaJS.
//
// internal/e2e/clients_test.go runs it with the cell's name as the argument
// and the deployment in the environment: KEYLINE_BOOTSTRAP (brokers),
// KEYLINE_APIKEY (an API key, SASL PLAIN user "token"), KEYLINE_URL (where
// POST /identity/token exchanges the API key for an IAM access token),
// KEYLINE_TOPIC, and the cell's data as JSON in KEYLINE_CELL_DATA. It prints
// one JSON object, what the test checks; a failure exits 1.
'use strict'

const { Kafka, ConfigResourceTypes, logLevel } = require('kafkajs')

const env = process.env
const topic = env.KEYLINE_TOPIC
const data = JSON.parse(env.KEYLINE_CELL_DATA || '{}')
const brokers = env.KEYLINE_BOOTSTRAP.split(',')

function kafka (sasl) {
  return new Kafka({
    clientId: 'keyline-matrix',
    brokers,
    sasl: sasl || { mechanism: 'plain', username: 'token', password: env.KEYLINE_APIKEY },
    connectionTimeout: 10000,
    requestTimeout: 60000,
    retry: { retries: 8 },
    logLevel: logLevel.ERROR
  })
}

// oauthBearerProvider: an IAM access token for the API key.
async function iamToken () {
  const resp = await fetch(env.KEYLINE_URL + '/identity/token', {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'urn:ibm:params:oauth:grant-type:apikey', apikey: env.KEYLINE_APIKEY })
  })
  if (!resp.ok) throw new Error('token endpoint: ' + resp.status)
  return { value: (await resp.json()).access_token }
}

function entries (configs) {
  return Object.entries(configs).map(([name, value]) => ({ name, value }))
}

async function withAdmin (k, fn) {
  const admin = k.admin()
  await admin.connect()
  try { return await fn(admin) } finally { await admin.disconnect() }
}

async function describe (admin) {
  const { resources } = await admin.describeConfigs({ includeSynonyms: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }] })
  const out = {}
  for (const e of resources[0].configEntries) out[e.configName] = e.configValue
  return out
}

async function createCompacted (admin, partitions) {
  const created = await admin.createTopics({ waitForLeaders: true, topics: [{ topic, numPartitions: partitions || 1, replicationFactor: 1, configEntries: entries(data.configs || {}) }] })
  if (!created) throw new Error('createTopics: the topic already exists')
}

// read is the first n values of the topic, read by a consumer group.
async function read (k, n, readUncommitted) {
  const consumer = k.consumer({ groupId: topic + (readUncommitted ? '-uncommitted' : '-reader'), readUncommitted, maxWaitTimeInMs: 200 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  const got = []
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`read ${got.length} of ${n}: ${got}`)), 60000)
    consumer.run({
      eachMessage: async ({ message }) => {
        got.push(message.value.toString())
        if (got.length >= n) { clearTimeout(timer); resolve() }
      }
    }).catch(reject)
  })
  await consumer.disconnect()
  return got
}

const cells = {
  create: () => withAdmin(kafka(), async admin => {
    await createCompacted(admin)
    return { configs: await describe(admin) }
  }),
  configs: () => withAdmin(kafka(), async admin => {
    await createCompacted(admin)
    // AlterConfigs replaces the topic's whole set: name every config to keep.
    await admin.alterConfigs({ validateOnly: false, resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: entries({ ...data.configs, 'retention.ms': data.retention }) }] })
    return { configs: await describe(admin) }
  }),
  transactions: async () => {
    const k = kafka()
    const producer = k.producer({ transactionalId: topic, idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    for (const value of ['committed-1', 'committed-2', 'aborted-1', 'committed-3']) {
      const txn = await producer.transaction()
      await txn.send({ topic, messages: [{ value, partition: 0 }] })
      if (value.startsWith('aborted')) await txn.abort()
      else await txn.commit()
    }
    await producer.disconnect()
    return { read_committed: await read(k, 3, false), read_uncommitted: await read(k, 4, true) }
  },
  'offsets-for-times': async () => {
    const k = kafka()
    const producer = k.producer()
    await producer.connect()
    // One send of three messages to one partition is one batch.
    await producer.send({ topic, messages: data.timestamps.map((ts, i) => ({ value: 'at-' + i, partition: 0, timestamp: String(ts) })) })
    await producer.disconnect()
    return withAdmin(k, async admin => {
      const offsets = []
      for (const ts of data.queries) {
        const [p] = await admin.fetchTopicOffsetsByTimestamp(topic, ts)
        offsets.push(Number(p.offset))
      }
      return { offsets }
    })
  },
  'delete-group': () => withAdmin(kafka(), async admin => {
    const groupId = topic
    await admin.setOffsets({ groupId, topic, partitions: [{ partition: 0, offset: '5' }, { partition: 1, offset: '7' }] })
    const [before] = await admin.fetchOffsets({ groupId, topics: [topic] })
    const committed = {}
    for (const p of before.partitions) committed[p.partition] = Number(p.offset)
    const deleted = await admin.deleteGroups([groupId])
    const { groups } = await admin.listGroups()
    return { committed, deleted: deleted.map(d => d.groupId), listed: groups.map(g => g.groupId) }
  }),
  oauthbearer: async () => {
    const k = kafka({ mechanism: 'oauthbearer', oauthBearerProvider: iamToken })
    const producer = k.producer()
    await producer.connect()
    await producer.send({ topic, messages: [{ value: 'over-oauthbearer', partition: 0 }] })
    await producer.disconnect()
    return { read: await read(k, 1, false) }
  }
}

cells[process.argv[2]]().then(
  out => { process.stdout.write(JSON.stringify(out) + '\n') },
  err => { console.error(err && err.stack ? err.stack : err); process.exit(1) }
)
