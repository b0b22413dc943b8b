//! Kubernetes and CI manifests of the profiler agent (see the folders beside
//! this crate); the tests parse every manifest into typed objects.
