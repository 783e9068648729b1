"""Imported at start by every Python process of a job scripts/torchrun.py starts (this folder is
first on their PYTHONPATH, in place of the interpreter's own sitecustomize, which on Debian only
installs Ubuntu's apport hook): a rank of the job gets torchrun_compat's TCPStore."""
import os

# A rank of a torchrun job (torchrun sets TORCHELASTIC_RUN_ID for each).
if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
    try:
        from torchrun_compat import use_classic_tcpstore

        use_classic_tcpstore()
    except Exception:  # no torch here: nothing to do
        pass
