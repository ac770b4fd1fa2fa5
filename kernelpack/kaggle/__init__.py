"""Kaggle from kernelpack: `session.KaggleSession` (the official client, signed in, routed, with
typed errors; its calls in `datasets`, `kernels`, `submissions`), `_client_internals` (the only
module that touches the client's private parts, and refuses an untested kaggle version),
`constants`, and `service/` (a local Kaggle service for rehearsals and tests). Nothing is imported
here, so `kernelpack --help` stays light."""
