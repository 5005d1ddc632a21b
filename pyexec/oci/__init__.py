"""pyexec-oci: a runc-compatible OCI runtime on pyexec's shim, cgroup manager,
seccomp, devices and mount code.

``pyexec-oci`` (the console script, also ``python -m pyexec.oci``) takes
runc's command line (args.py); a bundle's config.json is validated whole
before anything is made (spec.py) and translated into the library's launch
(the shim's SpawnPlan, the cgroup manager, the mount plan); the runtime
keeps one record per container under ``--root`` (state.py) and leaves no
process of its own behind: the container's process is pid 1 of its pid
namespace, a child of the caller's subreaper once ``create`` exits.
"""
