// Package deployments holds no code: it is how to run batchflow in
// production (README.md) and the NATS account with the least permissions
// each batchflow role needs (nats/batchflow.conf). Its test loads that
// configuration into a real nats-server and proves, with real clients over
// TCP, what each user can and cannot do.
package deployments
