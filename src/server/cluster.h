// Membership of a distributed job (docs/cluster.md): each rank's agent registers its address with
// a registry that rank 0's agent serves at MASTER_ADDR:PROBING_PORT, and keeps the registry's list
// of members, so that any rank leads a client to all of them — rank 0's gone included.
#pragma once

#include <chrono>

#include "server/http.h"
#include "server/routes.h"

namespace probing::server {

// Starts registering this rank (a thread, probing-cluster) when the process is a rank of a job
// (RANK and WORLD_SIZE set), TCP listens, and PROBING_PORT names a port; does nothing otherwise.
// `info` lives forever.
void start_cluster_membership(const AgentInfo& info);

// For the agent's exit handler: no heartbeat starts after it, and one over TLS (the only kind
// that uses libraries exit() tears down) is waited for up to `wait`.
void stop_cluster_membership(std::chrono::milliseconds wait) noexcept;

// GET /cluster: this rank's job, where its registry is, and the members it knows.
HttpResponse handle_cluster(const HttpRequest& request, const AgentInfo& info);
// POST /cluster/register (rank 0's agent): a rank's heartbeat; the reply carries the member list
// when it changed since the version the rank has.
HttpResponse handle_cluster_register(const HttpRequest& request);

}  // namespace probing::server
