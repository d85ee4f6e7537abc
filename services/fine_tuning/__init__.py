"""The fine-tuning library plugins are written against (the seed's names, our import paths): the plugin
contract, the data side (parsers, splitter, retrievers, loaders, storage producers, `prepare_data`) and
the training side (models, losses, metrics, the builder and the experiments manager). Dataprep and
the trainer both run plugins, so this is their shared home."""
