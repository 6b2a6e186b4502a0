"""BaselineModel: the serving model as the Evaluator/Trainer baseline, without a resolver."""
