"""What `kernelpack build` writes into a kernel's folder, by name: read by build, run-local and the
Kaggle commands alike."""

KERNEL_FILE = "kernel.py"
# The runtime config as the kernel embeds it, beside the kernel for run-local --test-dir.
CONFIG_FILE = "kernel-config.json"
