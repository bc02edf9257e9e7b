"""Studies built on the toolbox: the ablation, the paper-table comparison (reproduce), the
synthetic-pretrained trunk (pretrain), the demo, and the config fingerprint they share."""
