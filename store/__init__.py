"""The model store: versioned float masters and the quantized variants made from them on request
(:mod:`store.repository`, :mod:`store.variants`), served over HTTP (:mod:`store.app`), fetched, verified,
compiled and cached by workers (:mod:`store.fetch`, :mod:`store.client`), and the store CLI."""
